"""The whole study as one resumable job: ``python -m synthsat.pipeline experiment=NAME``."""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from synthsat.runtime import prepare_run


@hydra.main(version_base="1.3", config_path="../conf", config_name="pipeline")
def main(cfg: DictConfig) -> None:
    """Run the pipeline stages that exist so far: build, check and summarise the data."""
    prepare_run(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    print(datamodule.summary())


if __name__ == "__main__":
    main()
