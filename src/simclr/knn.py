"""kNN classifiers on frozen features, both on cosine similarity:

- weighted (Wu et al. 2018; the MoCo CIFAR demo, solo-learn's and lightly's monitors): the k most
  similar train features vote for their class with weight exp(sim / t). Used by the probe stage and,
  every train.knn_every epochs, as pretrain's monitor (on the training device, in batches);
- majority vote (dkobak/simclr-cifar10's metric, scikit-learn's KNeighborsClassifier(n_neighbors=10,
  metric="cosine")): one vote per neighbour, a tie going to the smallest class index as there."""
from __future__ import annotations

import torch

# pretrain's monitor uses the usual CIFAR setting; the probe stage reads probe.knn_k / probe.knn_t
MONITOR_K = 200
MONITOR_T = 0.1


def knn_predict(train_x, train_y, test_x, k: int, t: float | None, n_classes: int, batch: int = 1024) -> torch.Tensor:
    """Predicted class of every row of test_x (tensors or arrays; computed where train_x lives);
    t None: an unweighted majority vote."""
    tr = torch.as_tensor(train_x)
    te = torch.as_tensor(test_x).to(tr.device, tr.dtype)
    ty = torch.as_tensor(train_y).to(tr.device).long()
    tr = torch.nn.functional.normalize(tr, dim=1)
    te = torch.nn.functional.normalize(te, dim=1)
    k = min(k, len(tr))
    out = []
    for a in range(0, len(te), batch):
        sim, idx = (te[a:a + batch] @ tr.T).topk(k, dim=1)  # q x k
        votes = torch.zeros(len(idx), n_classes, dtype=tr.dtype, device=tr.device)
        votes.scatter_add_(1, ty[idx], torch.ones_like(sim) if t is None else (sim / t).exp())  # q x n_classes
        out.append(votes.argmax(1))
    return torch.cat(out)


def knn_accuracy(train_x, train_y, test_x, test_y, n_classes: int, k: int = MONITOR_K, t: float = MONITOR_T) -> float:
    pred = knn_predict(train_x, train_y, test_x, k, t, n_classes)
    return float((pred.cpu() == torch.as_tensor(test_y).cpu()).double().mean())
