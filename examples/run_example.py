"""`make example`: a local broker, one price producer and two price-alert consumers.

All processes are children of this script and are stopped on Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from comet.cli.local_broker import LocalBroker

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Run the example until Ctrl-C."""
    data = Path(os.environ.get("EXAMPLE_DATA_DIR", ".example-data"))
    broker = LocalBroker(data_dir=data, port=int(os.environ.get("EXAMPLE_PORT", "6174")))
    broker.start()
    print(f"broker on {broker.address} (data in {data}, log {broker.log_path})", flush=True)
    env = dict(os.environ, BROKER_ADDR=broker.address)
    children = [
        subprocess.Popen([sys.executable, str(HERE / "price_producer.py")], env=env),
        subprocess.Popen([sys.executable, str(HERE / "price_alert.py")], env=env),
        subprocess.Popen([sys.executable, str(HERE / "price_alert.py")], env=env),
    ]
    try:
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
