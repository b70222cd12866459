"""What train, evaluate and infer share: run folders, checkpoints, the trained model in them, device choice."""
