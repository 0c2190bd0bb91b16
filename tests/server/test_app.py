"""BrokerServer in this process: what start() leaves behind for the life of the process."""

from __future__ import annotations

import gc
from pathlib import Path

from comet.broker import BrokerConfig
from comet.broker.log_manager import LogManager
from comet.cluster import LocalCoordinator
from comet.server.app import BrokerServer


async def test_start_moves_long_lived_objects_out_of_the_cyclic_gc(tmp_path: Path) -> None:
    config = BrokerConfig(broker_id="b0", data_dir=tmp_path, listen_addr="127.0.0.1:0")
    server = BrokerServer(
        config, LocalCoordinator(LogManager(tmp_path, config.log_defaults).meta_dir)
    )
    gc.unfreeze()
    try:
        await server.start()
        assert server.port > 0
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # modules, the schema, the recovered broker
        assert len(gc.get_objects(generation=2)) < frozen
    finally:
        await server.stop()
        gc.unfreeze()
