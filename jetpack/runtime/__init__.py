"""Pods: planning, lifecycle on disk, stage1/stage2 and platform drivers."""
