"""Benchmark of xcomstash against BaseXCom, common.io and a physical baseline (see README.md)."""
