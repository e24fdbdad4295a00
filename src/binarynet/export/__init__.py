"""Export a trained torch BNN to a :class:`~binarynet.engine.PackedModel` (1-bit weights, integer thresholds).

``export(model, example_input, input_scale=None, input_offset=None, first_layer="bitplane")``
evaluates the model in eval mode and takes one of two paths:

- **chain** (the paper networks: an ``nn.Sequential``, or a model tracing to a chain, of
  binary layers, max-pool, batch norm, sign, flatten, dropout): each block

      Binary{Linear,Conv2d} -> [MaxPool2d] -> [BatchNorm] -> Sign   (hidden)
      BinaryLinear -> [BatchNorm1d]                                   (output)

  becomes one fused chain op (see :mod:`binarynet.engine.graph`), with decisions taken from the
  torch modules themselves: hidden layers' BN + sign -> an integer threshold verified on every
  reachable sum (:mod:`.folding`, docs/paper.md §5.3); max-pool before BN an OR of thresholded
  bits; the first layer a float32 boundary per unit found by bisection and, for uint8 images,
  exact integer thresholds per border class (:mod:`.first_layer`);
- **traced DAG** (everything else: residual and real-stream models such as the zoo's Bi-Real
  Net, ReActNet and QuickNet, binary layers with ``scale=``, users' networks of binarynet
  layers and standard torch modules): the model is traced with torch.fx (:mod:`.fx_trace`) and
  each node becomes format-3 ops (:mod:`.dag`, :mod:`.dag_modules`): real convs and dense
  layers, binary ones with float output (alpha and batch norm folded into their scale and
  shift), signs with folded thresholds (:mod:`.values`), adds, concats, pools, PReLU.
  :mod:`.exactness` measures how closely such a model follows torch (near-ties counted).

A chain the chain path refuses is tried on the traced path before an error is raised.
``to_torch(packed)`` turns a packed model back into a plain float torch network computing the
same function (:mod:`.torch_network`, :mod:`.torch_dag` for DAGs).

Parts: :mod:`.convert` (the ``export`` entry point, the choice of path and the final
engine-vs-torch check), :mod:`.inputs` (example input and normalisation), :mod:`.modules`
(which torch modules the chain supports and their geometry), :mod:`.builder` (the chain walk),
:mod:`.layers` (the engine op of each block), :mod:`.writer` (the graph being written).
"""
from .convert import export
from .modules import SUPPORTED_MODULES
from .torch_network import to_torch

__all__ = ["export", "to_torch", "SUPPORTED_MODULES"]
