#!/usr/bin/env python3
"""Runs one test of an end-to-end file N times in a row, each with a fresh set-up (and the
file's last test, when it is a clean-stop check, after it), and prints how many passed: the
way to show a once-intermittent test stays green.

usage: repeat.py BUILD_DIR SOURCE_DIR FILE.py TEST_NAME N
e.g.   repeat.py build . tests/e2e/test_interop.py \\
           test_kamailio_big_pipelined_burst_is_flow_controlled 30"""

import importlib.util
import io
import os
import sys
from contextlib import redirect_stdout


def main():
    build, source, path, name, n = sys.argv[1:6]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    sys.argv = [path, build, source]
    spec = importlib.util.spec_from_file_location("suite", path)
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    from sipharness import run_tests_skipping
    tests = [getattr(suite, name)]
    tail = getattr(suite, "TESTS", [None])[-1]
    if tail is not None and tail.__name__.startswith("test_clean_stop"):
        tests.append(tail)
    passed = 0
    for i in range(int(n)):
        out = io.StringIO()
        with redirect_stdout(out):
            rc = run_tests_skipping(tests, suite.setup, suite.teardown, none_ran=1)
        if rc == 0:
            passed += 1
        else:
            print("run %d failed:\n%s" % (i + 1, out.getvalue()[-3000:]), flush=True)
    print("%s: %d of %s runs passed" % (name, passed, n))
    return 0 if passed == int(n) else 1


if __name__ == "__main__":
    sys.exit(main())
