"""lab.server: the folders a typed path may read, and launching the app with the preset's upload limit."""

from __future__ import annotations

import os
from pathlib import Path

from lab import server


def test_allowed_dirs_are_the_project_data_the_runs_and_lab_data_dirs(tmp_path, monkeypatch):
    extra = tmp_path / "class-data"
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LAB_DATA_DIRS", os.pathsep.join([str(extra), str(tmp_path / "more")]))
    dirs = server.allowed_data_dirs()
    assert server.PROJECT_ROOT / "assets" in dirs and (tmp_path / "runs").resolve() in dirs
    assert extra.resolve() in dirs and (tmp_path / "more").resolve() in dirs
    assert all(d.is_absolute() for d in dirs)
    monkeypatch.setenv("LAB_DATA_DIRS", "")
    assert extra.resolve() not in server.allowed_data_dirs()


def test_launch_builds_the_app_for_the_preset_and_serves_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    seen = {}

    class Demo:
        def queue(self, **kwargs):
            seen["queue"] = kwargs
            return self

        def launch(self, **kwargs):
            seen["launch"] = kwargs

    def build_app(manager, preset, allowed_dirs):
        seen.update(root=manager.root, preset=preset.name, allowed=allowed_dirs)
        return Demo()

    monkeypatch.setattr(server, "build_app", build_app)
    server.launch("cpu", share=False)
    assert seen["preset"] == "cpu" and Path(seen["root"]) == (tmp_path / "runs").resolve()
    assert seen["launch"]["max_file_size"] == "20mb"  # the cpu preset's upload limit
    assert seen["launch"]["share"] is False and "theme" in seen["launch"]
    assert seen["queue"] == {"default_concurrency_limit": 8}
