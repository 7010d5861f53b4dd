"""nicflow's processes: the Celery app, agent, controller and CLI."""
