"""The consensus group beside the gossip keyspace: the Raft core and the coordination state
machine it replicates; may import kvd.state and shared only."""
