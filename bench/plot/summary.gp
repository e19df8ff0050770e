# summary.gp — throughput at full speed and CPU per relayed message at the fixed rate,
# side by side, one bar per load balancer (bench/run).
# Variables (gnuplot -e): data (columns: lb calls_per_s cpu_us_per_msg, header line), out,
# t1, t2 (panel titles).
set terminal pngcairo size 1100,480 noenhanced font "sans,10"
set output out
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.6
set key off
set grid ytics
set yrange [0:*]
set multiplot layout 1,2
set title t1
set ylabel "calls/s"
plot data using 2:xtic(1) skip 1 linecolor rgb "#3b6ea5", \
     '' using 0:2:(sprintf("%.0f", $2)) skip 1 with labels offset 0,0.7
set title t2
set ylabel "us of CPU per message"
plot data using 3:xtic(1) skip 1 linecolor rgb "#c0504d", \
     '' using 0:3:(sprintf("%.2f", $3)) skip 1 with labels offset 0,0.7
unset multiplot
