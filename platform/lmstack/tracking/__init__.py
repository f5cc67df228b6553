"""Run reports (report.html), MLflow tracking and the model registry: what a finished run leaves for
people to look at and compare. A stage: reads run directories, imports tasks and core only."""
