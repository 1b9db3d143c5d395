module hypersend.io/bench/loadgen

go 1.26

require github.com/coder/websocket v1.8.13
