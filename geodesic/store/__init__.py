"""What lives on disk: the datasets, the model zoo, checkpoints and their cards, run folders, compact nets
and their ONNX export, a user's architecture file."""
