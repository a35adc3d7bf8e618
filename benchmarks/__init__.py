"""fastpipe benchmark harness: the spleen experiment matrix, peers, microbenchmarks."""
