# wolfssl.cmake — find wolfSSL and define the imported targets sipslb links against.
#
#   slb::wolfssl         the optimized static build from deploy/setup-deps.sh
#                        (${SLB_DEPS_PREFIX}/wolfssl), else Debian's shared library with a
#                        loud warning (no AES-NI, no assembly: ~20x slower on AES-GCM).
#   slb::wolfssl_system  Debian's shared library, when installed: for speed comparisons only.
#                        Never link it into the same binary as slb::wolfssl: both builds share
#                        a soname and symbol names but not a struct layout.
#
# Sets SLB_WOLFSSL_KIND ("optimized" or "system"), SLB_WOLFSSL_VERSION, SLB_WOLFSSL_ASM (ON
# when options.h has both WOLFSSL_AESNI and WOLFSSL_SP_X86_64_ASM) and SLB_WOLFSSL_SYSTEM_FOUND.
include_guard(GLOBAL)

set(SLB_DEPS_PREFIX "/opt/sipslb-deps" CACHE PATH
    "Prefix of dependencies built by deploy/setup-deps.sh (wolfSSL in <prefix>/wolfssl)")

# Reads LIBWOLFSSL_VERSION_STRING and the speed-up macros from an include directory.
function(_slb_wolfssl_probe incdir out_version out_aesni out_spasm)
  set(_ver "unknown")
  if(EXISTS "${incdir}/wolfssl/version.h")
    file(STRINGS "${incdir}/wolfssl/version.h" _vl REGEX "#define LIBWOLFSSL_VERSION_STRING")
    string(REGEX REPLACE ".*\"([^\"]*)\".*" "\\1" _ver "${_vl}")
  endif()
  set(_aesni OFF)
  set(_spasm OFF)
  if(EXISTS "${incdir}/wolfssl/options.h")
    file(STRINGS "${incdir}/wolfssl/options.h" _opt REGEX "^#define WOLFSSL_(AESNI|SP_X86_64_ASM)$")
    if(_opt MATCHES "WOLFSSL_AESNI")
      set(_aesni ON)
    endif()
    if(_opt MATCHES "WOLFSSL_SP_X86_64_ASM")
      set(_spasm ON)
    endif()
  endif()
  set(${out_version} "${_ver}" PARENT_SCOPE)
  set(${out_aesni} ${_aesni} PARENT_SCOPE)
  set(${out_spasm} ${_spasm} PARENT_SCOPE)
endfunction()

find_package(Threads REQUIRED)
find_package(PkgConfig QUIET)

# --- Debian's shared library (fallback, and the speed baseline) ---------------------------
set(SLB_WOLFSSL_SYSTEM_FOUND OFF)
if(PKG_CONFIG_FOUND)
  # pkg_check_modules would honour PKG_CONFIG_PATH; pin the system directory so a user's
  # path pointing at the optimized build cannot make it "the system one".
  set(_slb_saved_pcp "$ENV{PKG_CONFIG_PATH}")
  set(ENV{PKG_CONFIG_PATH} "")
  pkg_check_modules(SLB_SYSWOLF QUIET IMPORTED_TARGET GLOBAL wolfssl)
  set(ENV{PKG_CONFIG_PATH} "${_slb_saved_pcp}")
  if(SLB_SYSWOLF_FOUND)
    set(SLB_WOLFSSL_SYSTEM_FOUND ON)
    if(NOT TARGET slb::wolfssl_system)
      add_library(slb::wolfssl_system ALIAS PkgConfig::SLB_SYSWOLF)
    endif()
  endif()
endif()

# --- The optimized static build --------------------------------------------------------
set(_slb_wolf_prefix "${SLB_DEPS_PREFIX}/wolfssl")
find_library(SLB_WOLFSSL_STATIC_LIB NAMES libwolfssl.a
             PATHS "${_slb_wolf_prefix}/lib" NO_DEFAULT_PATH)
find_path(SLB_WOLFSSL_STATIC_INCLUDE NAMES wolfssl/options.h
          PATHS "${_slb_wolf_prefix}/include" NO_DEFAULT_PATH)

if(SLB_WOLFSSL_STATIC_LIB AND SLB_WOLFSSL_STATIC_INCLUDE)
  add_library(slb::wolfssl STATIC IMPORTED GLOBAL)
  set_target_properties(slb::wolfssl PROPERTIES
    IMPORTED_LOCATION "${SLB_WOLFSSL_STATIC_LIB}"
    INTERFACE_INCLUDE_DIRECTORIES "${SLB_WOLFSSL_STATIC_INCLUDE}"
    # The installed wolfssl.pc omits -lm, which a static link needs.
    INTERFACE_LINK_LIBRARIES "m;Threads::Threads")
  set(SLB_WOLFSSL_KIND "optimized")
  set(_slb_wolf_where "${SLB_WOLFSSL_STATIC_LIB}")
  set(_slb_wolf_inc "${SLB_WOLFSSL_STATIC_INCLUDE}")
elseif(SLB_WOLFSSL_SYSTEM_FOUND)
  message(WARNING
    "sipslb: optimized wolfSSL not found in ${_slb_wolf_prefix}; falling back to Debian's "
    "libwolfssl, which has no AES-NI and no assembly (AES-GCM ~20x, handshakes 2-5x slower). "
    "Run deploy/setup-deps.sh as root, or pass -DSLB_DEPS_PREFIX=<prefix>.")
  add_library(slb::wolfssl INTERFACE IMPORTED GLOBAL)
  set_target_properties(slb::wolfssl PROPERTIES INTERFACE_LINK_LIBRARIES PkgConfig::SLB_SYSWOLF)
  set(SLB_WOLFSSL_KIND "system")
  set(_slb_wolf_where "${SLB_SYSWOLF_LINK_LIBRARIES}")
  set(_slb_wolf_inc "${SLB_SYSWOLF_INCLUDEDIR}")
else()
  message(FATAL_ERROR
    "sipslb: no wolfSSL: neither ${_slb_wolf_prefix} (deploy/setup-deps.sh) nor Debian's "
    "libwolfssl-dev (pkg-config wolfssl) was found.")
endif()

_slb_wolfssl_probe("${_slb_wolf_inc}" SLB_WOLFSSL_VERSION _slb_aesni _slb_spasm)
if(_slb_aesni AND _slb_spasm)
  set(SLB_WOLFSSL_ASM ON)
else()
  set(SLB_WOLFSSL_ASM OFF)
endif()
message(STATUS "sipslb: wolfSSL ${SLB_WOLFSSL_VERSION} (${SLB_WOLFSSL_KIND}) at ${_slb_wolf_where}; "
               "WOLFSSL_AESNI=${_slb_aesni} WOLFSSL_SP_X86_64_ASM=${_slb_spasm}")
if(SLB_WOLFSSL_SYSTEM_FOUND AND NOT SLB_WOLFSSL_KIND STREQUAL "system")
  message(STATUS "sipslb: Debian's wolfSSL ${SLB_SYSWOLF_VERSION} available as "
                 "slb::wolfssl_system (speed comparison only)")
endif()
