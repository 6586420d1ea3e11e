"""The datasets the engine knows, torch-free (the app offers them before torch loads; store/data.py reads them):
name → torchvision's folder of its raw files."""

FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
DATASETS = tuple(FOLDERS)
