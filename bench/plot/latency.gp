# latency.gp — SIP transaction latency percentiles per load balancer (bench/run).
# sipslb-load reports percentiles (p50, p90, p99, p99.9), not a full histogram, so this
# draws percentile curves: x is the percentile on a "nines" scale, y the latency (log).
# Variables (gnuplot -e): data (columns: x label LB1 LB2 ..., header line), out, ncols,
# title.
set terminal pngcairo size 900,560 noenhanced font "sans,10"
set output out
set title title
set key top left autotitle columnheader
set logscale y
set ylabel "latency (us)"
set xlabel "percentile"
set grid ytics mytics xtics
set xrange [0.2:3.1]
plot for [i=3:ncols] data using 1:i:xtic(2) with linespoints lw 2 pt 7
