# memory.gp — memory of each load balancer over a soak run (bench/run --soak).
# Variables (gnuplot -e): data (space-separated data files: t_s pss_mb rss_mb, header
# line), titles (space-separated, one per file), out, title.
set terminal pngcairo size 900,520 noenhanced font "sans,10"
set output out
set title title
set key bottom right
set xlabel "time (s)"
set ylabel "MB (Pss, all processes)"
set grid
set yrange [0:*]
plot for [i=1:words(data)] word(data, i) using 1:2 skip 1 with lines lw 2 title word(titles, i)
