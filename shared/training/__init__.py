"""Training jobs: the one submission door, and the job log."""
