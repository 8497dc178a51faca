"""The ``qgnet`` entry point: QGNet as a glocon plugin (found through ``glocon.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from glocon.plugin_api import GloconModel, Plugin, Row

from glocon_qgnet.model import QGNetConfig, build_qgnet

if TYPE_CHECKING:
    from glocon.plugin_api import PriorExtractor
    from glocon_qgnet.model import QGNet


class QGNetPlugin(Plugin):
    name = "qgnet"
    config_model = QGNetConfig
    trainable = True
    description = "QGNet: prior + guided region maps, category guider, PFENet's FEM decoder"
    # the controls of "the prior map helps": the branch off (fewer trained layers too), and the same
    # layers with an untrained prior of the same architecture (no pretraining)
    variants = {
        "qgnet": Row(),
        "qgnet-no-prior": Row(("model.use_prior_map=false",)),
        "qgnet-untrained-prior": Row(prior="untrained"),
        # the same layers reading F's own ImageNet features as the prior: does pretraining beat reuse?
        "qgnet-imagenet-prior": Row(prior="imagenet"),
    }

    def build_model(self, cfg: GloconModel, prior: "PriorExtractor | None" = None) -> "QGNet":
        """QGNet on CPU; ``prior`` (frozen here) wins over ``cfg.prior_path``. The caller moves it to a device."""
        return build_qgnet(QGNetConfig.model_validate(self.make_config(cfg)), prior)


plugin = QGNetPlugin()
