from __future__ import annotations

import pytest

from xcomstash.errors import ConfigError, TypeNotAllowedError, ValueTooLargeError
from xcomstash.security.rules import Rules, ValueRule, parse_dag_policies, parse_types

POLICIES = """[
  {"dags": "finance_*", "allowed_types": ["json"], "max_value_bytes": 1000, "sensitive_data": "reject", "read_scope": "dag"},
  {"dags": "ml_*", "allowed_types": "pandas.DataFrame, numpy.ndarray"}
]"""


def rules() -> Rules:
    return Rules(ValueRule(max_value_bytes=10_000, sensitive_data="warn"), parse_dag_policies(POLICIES))


def test_first_matching_pattern_wins_and_unset_fields_fall_back() -> None:
    fin = rules().for_dag("finance_daily")
    assert (fin.allowed_types, fin.max_value_bytes, fin.sensitive_data, fin.read_scope) == (("json",), 1000, "reject", "dag")
    ml = rules().for_dag("ml_train")
    assert ml.allowed_types == ("pandas.DataFrame", "numpy.ndarray")
    assert (ml.max_value_bytes, ml.sensitive_data, ml.read_scope) == (10_000, "warn", "any")
    other = rules().for_dag("other")
    assert other.allowed_types is None and other.size_origin == "the deployment ([xcomstash])"


def test_json_only_dag_rejects_arrays_naming_the_rule() -> None:
    fin = rules().for_dag("finance_daily")
    fin.check_type("dict", "json", True)
    with pytest.raises(TypeNotAllowedError) as err:
        fin.check_type("numpy.ndarray", "numpy.npy", False)
    assert "dag_policies[0] (dags='finance_*')" in str(err.value) and "numpy.ndarray" in str(err.value)
    assert err.value.rule.startswith("allowed_types of dag_policies[0]")


def test_allowlist_matches_type_or_codec_name() -> None:
    ml = rules().for_dag("ml_x")
    ml.check_type("pandas.DataFrame", "pandas.arrow-ipc", False)
    with pytest.raises(TypeNotAllowedError):
        ml.check_type("dict", "json", True)
    Rules(ValueRule(allowed_types=("pandas.arrow-ipc",))).for_dag("d").check_type("pandas.DataFrame", "pandas.arrow-ipc", False)
    Rules(ValueRule(allowed_types=("*",))).for_dag("d").check_type("x", "y", False)


def test_size_limit_names_the_rule_and_zero_means_unlimited() -> None:
    fin = rules().for_dag("finance_a")
    fin.check_size(1000)
    with pytest.raises(ValueTooLargeError, match=r"1,001 bytes, over the limit of 1,000 set by rule max_value_bytes of dag_policies\[0\]"):
        fin.check_size(1001)
    with pytest.raises(ValueTooLargeError, match="at least"):
        fin.check_size(5000, estimated=True)
    Rules().for_dag("x").check_size(10**12)


@pytest.mark.parametrize(
    "text",
    ["{", "{}", "[1]", '[{"x": 1}]', '[{"dags": "a", "bogus": 1}]', '[{"dags": "a", "max_value_bytes": -1}]',
     '[{"dags": "a", "sensitive_data": "shout"}]', '[{"dags": "a", "read_scope": "team"}]', '[{"dags": "a", "allowed_types": 5}]'],
)
def test_bad_dag_policies_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_dag_policies(text)


def test_scans_flag_and_type_list_parsing() -> None:
    assert rules().scans and not Rules().scans
    assert parse_types(" json , dict,") == ("json", "dict") and parse_types("") is None
    assert parse_dag_policies("  ") == ()
