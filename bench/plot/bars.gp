# bars.gp — one figure per load balancer as bars (bench/run: handshakes per CPU-second,
# kB per idle TLS connection).
# Variables (gnuplot -e): data (columns: lb value, header line), out, title.
set terminal pngcairo size 700,480 noenhanced font "sans,10"
set output out
set title title
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.6
set key off
set grid ytics
set yrange [0:*]
plot data using 2:xtic(1) skip 1 linecolor rgb "#3b6ea5", \
     '' using 0:2:(sprintf("%.1f", $2)) skip 1 with labels offset 0,0.7
