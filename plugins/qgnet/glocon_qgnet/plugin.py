"""The ``qgnet`` entry point: QGNet as a glocon plugin (found through ``glocon.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from glocon.plugins import Plugin

from glocon_qgnet.model import QGNetConfig, build_qgnet

if TYPE_CHECKING:
    from glocon.models.prior import PriorExtractor
    from glocon_qgnet.model import QGNet


class QGNetPlugin(Plugin):
    name = "qgnet"
    config_model = QGNetConfig
    trainable = True
    description = "QGNet: prior + guided region maps, category guider, PFENet's FEM decoder"
    # the controls of "the prior map helps": the branch off (fewer trained layers too), and the same
    # layers with an untrained prior of the same architecture (no pretraining)
    variants = {
        "qgnet": ((), "pretrained"),
        "qgnet-no-prior": (("model.use_prior_map=false",), "pretrained"),
        "qgnet-untrained-prior": ((), "untrained"),
        # the same layers reading F's own ImageNet features as the prior: does pretraining beat reuse?
        "qgnet-imagenet-prior": ((), "imagenet"),
    }

    def build_model(self, cfg: QGNetConfig, prior: "PriorExtractor | None" = None) -> "QGNet":
        """QGNet on CPU; ``prior`` (frozen here) wins over ``cfg.prior_path``. The caller moves it to a device."""
        return build_qgnet(self.make_config(cfg), prior)


plugin = QGNetPlugin()
