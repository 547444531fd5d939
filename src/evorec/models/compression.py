"""Compressed parameters of a saved model: how ``state.pt`` stores them and how they load.

A compressed model directory records how in the manifest's ``compression`` entry
(:func:`evorec.modeldir.recorded_compression`): ``method`` as asked for, ``state`` the
encoding of the parameters below (absent: float32), and the method's settings. Its
``state.pt`` still holds plain tensors only (it loads with ``weights_only=True``), some of
them encoded:

- ``fp16``: every floating tensor of the network in half precision;
- ``int8``: every 2-D floating tensor (item table, linear weights) as int8 with one scale
  per row (symmetric: ``w ≈ q · scale``), the rest unchanged;
- ``dynamic-int8``: stored as ``int8``; after loading, the network's linear layers are
  quantised dynamically (int8 weights, activations quantised per batch) for CPU encoding;
- ``prune``: the encoder's linear weights with their smallest-magnitude share set to zero,
  stored as their non-zero entries (flat indices and values).

Loading decodes every tensor back to float32 before the model's ``load_saved_state``, except
an int8 item table (:data:`ITEM_TABLE`): a sequence network that reads its table by rows only
holds it as :class:`Int8Embedding` (int8 codes and per-row scales, a quarter of float32's
bytes), looks up a history's rows dequantised, and its model gives the item vectors as
:class:`~evorec.retrieval.ranking.Int8Vectors`, which the ranking path scores as they are.
Scores stay ``s = i · v`` with the dequantised parameters (up to float32 summation order).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from evorec.errors import EvorecError, ModelDirError
from evorec.retrieval.ranking import Int8Vectors

STATE_METHODS = ("fp16", "int8", "dynamic-int8", "prune")
ENCODING = "encoding"  # the key that marks an encoded tensor (a dict in place of a tensor)
ITEM_TABLE = "item_embedding.weight"  # a sequence network's item table: int8 stays int8


def encode_int8(weight: torch.Tensor) -> dict[str, Any]:
    """``weight`` (2-D) as int8 rows with one float32 scale each: ``w ≈ q · scale``."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return {ENCODING: "int8-row", "q": q, "scale": scale}


def is_encoded(value: Any) -> bool:
    """Whether ``value`` is an encoded tensor (a dict marked with :data:`ENCODING`)."""
    return isinstance(value, dict) and ENCODING in value


def check_int8(value: dict[str, Any]) -> dict[str, Any]:
    """An ``int8-row`` encoding checked to be int8 rows with one float32 scale each."""
    q, scale = value.get("q"), value.get("scale")
    if not isinstance(q, torch.Tensor) or q.dtype != torch.int8 or q.dim() != 2:
        raise ValueError("int8 rows must be a 2-D int8 tensor")
    if not isinstance(scale, torch.Tensor) or scale.shape != (len(q),):
        raise ValueError(f"{len(q)} int8 rows need {len(q)} scales")
    return {ENCODING: "int8-row", "q": q, "scale": scale.float()}


class Int8Embedding(nn.Module):
    """An embedding table held as int8 rows with one float32 scale each (``w ≈ q · scale``,
    as :func:`encode_int8` stores it): a lookup dequantises only the rows it reads."""

    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("codes", torch.zeros(rows, dim, dtype=torch.int8))
        self.register_buffer("scale", torch.zeros(rows, dtype=torch.float32))

    @property
    def num_embeddings(self) -> int:
        return int(self.codes.shape[0])

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows (any shape of indices) dequantised: ``[*rows.shape, dim]`` float32."""
        return self.codes[rows].float() * self.scale[rows].unsqueeze(-1)

    def vectors(self, rows: slice) -> Int8Vectors:
        """A slice of the table's rows as int8 vectors (views of the buffers on the CPU)."""
        return Int8Vectors(self.codes[rows].cpu().numpy(), self.scale[rows].cpu().numpy())

    def encoded(self) -> dict[str, Any]:
        """The table as ``state.pt`` stores it (:func:`encode_int8`'s form)."""
        return {ENCODING: "int8-row", "q": self.codes.cpu(), "scale": self.scale.cpu()}

    def dequantised(self) -> nn.Embedding:
        """The table as float32 parameters (to train it)."""
        weight = decode(self.encoded()).to(self.codes.device)
        return nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=0)


def encode_sparse(weight: torch.Tensor) -> dict[str, Any]:
    """``weight``'s non-zero entries: flat indices (int32), values and the shape."""
    flat = weight.detach().float().reshape(-1)
    where = torch.nonzero(flat, as_tuple=True)[0]
    return {
        ENCODING: "sparse",
        "indices": where.to(torch.int32),
        "values": flat[where],
        "shape": torch.tensor(weight.shape, dtype=torch.int64),
    }


def decode(value: Any) -> Any:
    """An encoded tensor (or any nesting of them) back to float32 tensors."""
    if is_encoded(value):
        kind = value[ENCODING]
        if kind == "int8-row":
            return value["q"].float() * value["scale"].float()[:, None]
        if kind == "sparse":
            shape = [int(n) for n in value["shape"]]
            dense = torch.zeros(int(torch.Size(shape).numel()), dtype=torch.float32)
            dense[value["indices"].long()] = value["values"].float()
            return dense.reshape(shape)
        raise ValueError(f"unknown tensor encoding {kind!r}")
    if isinstance(value, dict):
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, torch.Tensor) and value.dtype == torch.float16:
        return value.float()
    return value


def compress_network_state(
    network: dict[str, torch.Tensor], method: str, pruned: set[str] = frozenset()
) -> dict[str, Any]:
    """A network's state dict with its tensors encoded for ``method``; with ``prune`` the
    tensors named in ``pruned`` are stored sparse."""
    out: dict[str, Any] = {}
    for name, tensor in network.items():
        # an encoded tensor is held so (a loaded int8 table): stored as it is
        if is_encoded(tensor) or not tensor.is_floating_point():
            out[name] = tensor
        elif method == "fp16":
            out[name] = tensor.half()
        elif method in ("int8", "dynamic-int8") and tensor.dim() == 2:
            out[name] = encode_int8(tensor)
        elif method == "prune" and name in pruned:
            out[name] = encode_sparse(tensor)
        else:
            out[name] = tensor
    return out


def compress_state(state: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
    """A model's ``saved_state()`` as ``state.pt`` stores it under the compression ``record``
    (the manifest's entry; None: unchanged). Only the network's tensors are encoded."""
    if record is None or record.get("state") not in STATE_METHODS or "network" not in state:
        return state
    network = state["network"]
    if not all(isinstance(value, torch.Tensor) or is_encoded(value) for value in network.values()):
        raise EvorecError(
            "a dynamically quantised network cannot be saved; compress the original model"
        )
    pruned = set(record.get("pruned", []))
    return {**state, "network": compress_network_state(network, record["state"], pruned)}


def decode_state(state: dict[str, Any], record: dict[str, Any] | None, file: Any) -> Any:
    """``state`` as the model's ``load_saved_state`` reads it: decoded when the manifest records
    a compression method (``file``: ``state.pt``, for messages), except an int8 item table
    (the network's :data:`ITEM_TABLE`), which is only checked: the model decides whether it
    holds it int8 or decodes it."""
    if record is None:
        return state
    encoding = record.get("state")
    if encoding is not None and encoding not in STATE_METHODS:
        raise ModelDirError(
            f"{file}: the manifest's compression state {encoding!r} is none of "
            f"{', '.join(STATE_METHODS)}"
        )
    try:
        network = state.get("network")
        table = network.get(ITEM_TABLE) if isinstance(network, dict) else None
        if not is_encoded(table) or table[ENCODING] != "int8-row":
            return decode(state)
        rest = {name: value for name, value in network.items() if name != ITEM_TABLE}
        decoded = decode({**state, "network": rest})
        decoded["network"][ITEM_TABLE] = check_int8(table)
        return decoded
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise ModelDirError(f"{file}: compressed parameters do not decode ({exc})") from None


def after_load(model: Any, file: Any) -> None:
    """What a compression method changes in a loaded model (``file``: ``state.pt``, for
    messages): ``dynamic-int8`` quantises the network's linear layers, on the CPU."""
    record = model.compression
    if record is None or record.get("state") != "dynamic-int8":
        return
    network = getattr(model, "network", None)
    if not isinstance(network, nn.Module):
        raise ModelDirError(f"{file}: dynamic-int8 needs a neural sequence model, not {model.name}")
    model.network = quantize_dynamic(network.cpu()).eval()
    model.config = model.config.model_copy(update={"device": "cpu"})


def linear_layers(network: nn.Module) -> dict[str, nn.Linear]:
    """The encoder's linear layers by module name (the item table is not one)."""
    return {name: module for name, module in network.named_modules() if type(module) is nn.Linear}


def quantize_dynamic(network: nn.Module) -> nn.Module:
    """``network`` with its linear layers quantised dynamically to int8 (per output
    channel), for CPU inference."""
    with warnings.catch_warnings():  # eager-mode quantisation warns of its deprecation
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig
        from torch.ao.quantization import quantize_dynamic as quantize

        return quantize(network, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def prune_linear(network: nn.Module, sparsity: float) -> set[str]:
    """Zero the ``sparsity`` share of smallest-magnitude weights of each linear layer of
    ``network`` in place (``torch.nn.utils.prune``, made permanent); the names of the
    pruned parameters in the state dict."""
    from torch.nn.utils import prune

    names = set()
    for name, module in linear_layers(network).items():
        prune.l1_unstructured(module, "weight", amount=sparsity)
        prune.remove(module, "weight")
        names.add(f"{name}.weight")
    return names


def sparsity(network: nn.Module) -> float:
    """The share of zero entries among the weights of ``network``'s linear layers."""
    weights = [module.weight for module in linear_layers(network).values()]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / max(total, 1)
