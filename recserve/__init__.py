"""The `recserve` command: the composition root that builds Settings and calls the parts."""
