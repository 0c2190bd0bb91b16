import dataclasses

import pytest

from comet.storage import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_SEGMENT_BYTES,
    InvalidConfigError,
    LogConfig,
)

ALL_KEYS = {
    "segment.bytes",
    "segment.ms",
    "retention.ms",
    "retention.bytes",
    "index.interval.bytes",
    "flush.policy",
    "flush.interval.ms",
    "max.message.bytes",
    "min.insync.replicas",
    "unclean.leader.election.enable",
}


def test_defaults_are_the_documented_constants():
    config = LogConfig()
    assert config.segment_bytes == DEFAULT_SEGMENT_BYTES == 1 << 30
    assert config.segment_ms == config.retention_ms == 7 * 24 * 3600 * 1000
    assert config.retention_bytes == -1
    assert config.index_interval_bytes == 4096
    assert config.flush_policy == "batch"
    assert config.flush_interval_ms == 1000
    assert config.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES == 4 << 20


def test_to_dict_has_every_key_as_strings_and_round_trips():
    config = LogConfig(segment_bytes=4096, flush_policy="interval", retention_ms=-1)
    as_dict = config.to_dict()
    assert set(as_dict) == ALL_KEYS
    assert all(isinstance(v, str) for v in as_dict.values())
    assert as_dict["segment.bytes"] == "4096"
    assert LogConfig().with_overrides(as_dict) == config


def test_with_overrides_applies_values_and_keeps_the_rest():
    config = LogConfig().with_overrides({"segment.bytes": "2048", "flush.policy": "none"})
    assert config.segment_bytes == 2048
    assert config.flush_policy == "none"
    assert config.index_interval_bytes == 4096


def test_minus_one_means_unlimited_retention():
    config = LogConfig().with_overrides({"retention.ms": "-1", "retention.bytes": "-1"})
    assert config.retention_ms == config.retention_bytes == -1


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("segment.byte", "1024", "unknown config key"),
        ("segment.bytes", "lots", "not an integer"),
        ("segment.bytes", "1.5", "not an integer"),
        ("segment.bytes", "100", "between 1024"),
        ("segment.bytes", str(1 << 31), "between 1024"),
        ("segment.ms", "0", "between 1"),
        ("retention.ms", "-2", "-1 (unlimited)"),
        ("retention.bytes", "-5", "-1 (unlimited)"),
        ("index.interval.bytes", "-1", "between 0"),
        ("flush.policy", "sometimes", "batch, interval, none"),
        ("flush.interval.ms", "0", "between 1"),
        ("max.message.bytes", "10", "between 61"),
    ],
)
def test_invalid_overrides_name_the_key_and_the_rule(key, value, fragment):
    with pytest.raises(InvalidConfigError) as caught:
        LogConfig().with_overrides({key: value})
    message = str(caught.value)
    assert message.startswith(f"{key}: ")
    assert fragment in message
    assert caught.value.key == key


def test_invalid_config_error_is_a_value_error():
    with pytest.raises(ValueError, match=r"segment\.bytes"):
        LogConfig().with_overrides({"segment.bytes": "x"})


def test_constructor_validates_too():
    with pytest.raises(InvalidConfigError, match=r"segment\.bytes"):
        LogConfig(segment_bytes=10)
    with pytest.raises(InvalidConfigError, match=r"flush\.policy"):
        LogConfig(flush_policy="always")


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        LogConfig().segment_bytes = 5  # type: ignore[misc]
