"""nicflow's engine: pipelines, the run state machine and its checkpoints."""
