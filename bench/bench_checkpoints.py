"""Re-measure every shipped checkpoint on its full test set, next to what its card states; for the mlp nets, how
many hidden units never fire on it and how often the least active one does."""

from __future__ import annotations

import pandas as pd
import torch
from common import ROOT, save

from geodesic.core.params import spec_of
from geodesic.core.train import evaluate
from geodesic.store import checkpoints, data, zoo


def firing(model, x: torch.Tensor) -> dict:
    """For an mlp: hidden units that are 0 after the ReLU on every image of x, and the least share of the images on
    which a unit fires; empty for other nets."""
    if not isinstance(model, zoo.MLP):
        return {}
    with torch.no_grad():
        on = torch.relu(model.fc1(model.norm(x).flatten(1))) > 0
    return {"dead hidden units": int((~on.any(0)).sum()), "least-firing unit": float(on.float().mean(0).min())}


def main() -> None:
    torch.set_num_threads(2)
    rows = []
    for path in sorted((ROOT / "assets" / "checkpoints").glob("*.safetensors")):
        model, card = checkpoints.load(path)
        test = data.load(card["dataset"], "test", "full")
        loss, acc = evaluate(model, test)
        rows.append({"checkpoint": path.name, "weights": spec_of(model).n, "epochs": card["epochs"],
                     "warmup steps": card.get("warmup", 0), "train seconds (card)": card["train_seconds"],
                     "test accuracy (card)": card["test_accuracy"], "test accuracy (measured now)": acc,
                     "test loss": loss, **firing(model, test.x)})
    note = ("Full 10,000-image test sets; training on the 2-core CPU, Adam, cosine schedule (after a linear warmup "
            "where given), seed 0. Dead hidden units: units of the mlp's hidden layer that are 0 on every test "
            "image; least-firing unit: the smallest share of the test images on which one of them is > 0.")
    print(save("checkpoints", pd.DataFrame(rows).astype(object).fillna("-"), note))  # "-": not an mlp


if __name__ == "__main__":
    main()
