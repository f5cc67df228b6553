"""Clusters and jobs: a local multi-node Ray cluster for development and tests (`local`), and
submission of lmstack verbs to any Ray cluster through the Job Submission API (`jobs`)."""
