"""Model summary: what a BNN costs, layer by layer, in bits, bytes, MACs and (estimated) energy.

``summary(model_or_packed, input_shape=None)`` accepts a torch model (a trained or untrained
``nn.Module``, e.g. from ``binarynet.models``), a ``binarynet.engine.PackedModel`` or the path of
a packed ``.bnn`` file, and returns a :class:`ModelSummary`: one :class:`LayerSummary` per layer
plus totals, the float32 / packed compression ratio and an energy estimate. ``str()`` gives a
text table, ``to_markdown()`` a Markdown one (for reports), ``to_dict()`` plain JSON types.

Parts: :mod:`.costs` (the records and the counting rules), :mod:`.torch_model` (tracing and
counting a torch model), :mod:`.packed` (a packed model, torch-free), :mod:`.energy` (the
energy ESTIMATE from the paper's Tables 2-3, :func:`energy_estimate`), :mod:`.tables` (text
and Markdown forms), :mod:`.summarise` (the ``summary`` entry point) and :mod:`.targets`
(what ``binarynet summary TARGET`` names: file, run folder, recipe or model name).
"""
from .costs import LayerSummary, ModelSummary
from .energy import DRAM_ACCESS_PJ, MAC_ENERGY_PJ, SRAM_ACCESS_PJ, energy_estimate
from .summarise import summary
from .tables import energy_lines
from .targets import is_packed_file, recipe_input, recipe_op_macs, summary_of_target

__all__ = ["summary", "ModelSummary", "LayerSummary", "energy_estimate", "energy_lines",
           "MAC_ENERGY_PJ", "SRAM_ACCESS_PJ", "DRAM_ACCESS_PJ", "summary_of_target",
           "recipe_input", "recipe_op_macs", "is_packed_file"]
