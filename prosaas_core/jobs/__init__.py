"""Jobs: enqueue, transport over RQ, dispatch to plugin handlers, the sweeper."""
