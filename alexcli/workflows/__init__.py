"""What runs other stages: a recipe's pipeline (`alexcli run`, `alexcli demo`:
pipeline.py) and the ablation study (`alexcli ablate`). A layer above the stages and
below the CLI: a workflow calls stages as a user would, and no stage calls a workflow."""
