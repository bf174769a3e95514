"""etcd as the benchmark's peer: a single-node server and its KV API over our own minimal proto."""
