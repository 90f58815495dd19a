"""The benchmark engine behind `kvbench`: YCSB-style workloads, key choosers, histograms."""
