"""Clean accuracy and NLL over a dataset, in large fixed-order batches with no per-batch sync."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustbench_mm.data.images import ImageSet, eval_batches


@torch.no_grad()
def predict(model: torch.nn.Module, data: ImageSet, batch_size: int = 1000) -> torch.Tensor:
    """Logits (fp32) for every image, in dataset order."""
    model.eval()
    device = next(model.parameters()).device
    outputs = [model(x.to(device, non_blocking=True)).float() for x, _ in eval_batches(data, batch_size)]
    return torch.cat(outputs)


def accuracy_and_nll(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    labels = labels.to(logits.device)
    correct = (logits.argmax(1) == labels).float().mean()
    nll = F.cross_entropy(logits, labels)
    return {"accuracy": 100.0 * correct.item(), "nll": nll.item()}


def evaluate(model: torch.nn.Module, data: ImageSet, batch_size: int = 1000) -> dict[str, float]:
    """Test accuracy (%) and mean negative log-likelihood."""
    return accuracy_and_nll(predict(model, data, batch_size), data.labels)
