"""The workloads' .xdlm manifests: valid HCP manifests with true MD5s, every file listed.

    python -m pytest -q benchmarks/test_workloads.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from benchmarks import workloads as w


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("unprocessed/3T/tfMRI_MOTOR_LR/100206_3T_tfMRI_MOTOR_LR.nii.gz", {"3T_tfMRI_MOTOR_unproc"}),
        ("unprocessed/3T/rfMRI_REST2_RL/100206_3T_rfMRI_REST2_RL.nii.gz", {"3T_rfMRI_REST2_unproc"}),
        ("unprocessed/3T/T1w_MPR1/100206_3T_T1w_MPR1.nii.gz", {"3T_Structural_unproc"}),
        ("unprocessed/3T/Diffusion/100206_3T_DWI_dir95_LR.nii.gz", {"3T_Diffusion_unproc"}),
        ("MNINonLinear/Results/rfMRI_REST1_LR/rfMRI_REST1_LR_Atlas_MSMAll_hp2000_clean.dtseries.nii",
         {"3T_rfMRI_REST_fix", "3T_rfMRI_REST1_fixextended"}),
        ("MNINonLinear/Results/rfMRI_REST1_LR/rfMRI_REST1_LR_hp2000.ica/filtered_func_data.ica/melodic_mix",
         {"3T_rfMRI_REST1_fixextended"}),
        ("MNINonLinear/Results/rfMRI_REST2_RL/rfMRI_REST2_RL_Atlas.dtseries.nii", {"3T_rfMRI_REST2_preproc"}),
        ("MNINonLinear/Results/tfMRI_WM_LR/tfMRI_WM_LR_hp200_s4_level1.fsf", {"3T_tfMRI_WM_analysis_s4"}),
        ("MNINonLinear/Results/tfMRI_WM_LR/tfMRI_WM_LR_Atlas.dtseries.nii", {"3T_tfMRI_WM_preproc"}),
        ("T1w/Results/tfMRI_WM_LR/SBRef_dc.nii.gz", {"3T_tfMRI_WM_preproc"}),
        ("MNINonLinear/Results/tfMRI_WM/tfMRI_WM_hp200_s12_level2.feat/cope1.feat/zstat1.nii.gz",
         {"3T_tfMRI_WM_analysis_s12"}),
        ("MNINonLinear/Results/tfMRI_WM/prepare_level2_feat_analysis.sh",
         {f"3T_tfMRI_WM_analysis_s{n}" for n in (2, 4, 8, 12)}),
        ("release-notes/tfMRI_WM_preproc.txt", {"3T_tfMRI_WM_preproc"}),
        ("release-notes/ReleaseNotes.txt", {w.ALL_PACKAGES}),
        ("T1w/100206/mri/aseg.mgz", {"3T_Structural_preproc_extended"}),
        ("T1w/T1w_acpc_dc_restore.nii.gz", {"3T_Structural_preproc"}),
        ("MNINonLinear/fsaverage_LR32k/100206.L.white.32k_fs_LR.surf.gii", {"3T_Structural_preproc"}),
    ],
)
def test_packages_of(rel: str, expected: set[str]) -> None:
    assert w.packages_of(rel) == expected


def test_subject_plan_uses_every_manifest_and_lists_every_file() -> None:
    p = w.plan("subject")
    manifests = [k for k, size in p.objects if size is None]
    assert len(p.objects) == 12_863
    assert sorted(manifests) == sorted(p.manifests) and len(manifests) == 53
    assert all(w.is_manifest(k) for k in manifests)
    listed = {k for ks in p.manifests.values() for k in ks}
    data = {k for k, size in p.objects if size is not None}
    assert listed == data and len(data) == 12_810


def test_manifest_bytes_is_one_line_of_hcp_json() -> None:
    body = w.manifest_bytes([("HCP_1200/100206/T1w/a.nii.gz", "0" * 32)])
    assert b"\n" not in body
    assert json.loads(body) == {"DownloadManifest": {"Includes": [{"URI": "100206/T1w/a.nii.gz", "Checksum": "0" * 32}]}}


def test_generated_manifests_carry_the_true_md5s(tmp_path: Path) -> None:
    wl = w.generate("subject-tiny", tmp_path)
    assert wl.manifest_check["ok"] and wl.manifest_check["unlisted_count"] == 0
    assert len(wl.objects) <= w.TINY_COUNT
    by_key = {o.key: o for o in wl.objects}
    for m in wl.xdlm_objects:
        doc = json.loads(wl.path_of(m.key).read_bytes())
        for e in doc["DownloadManifest"]["Includes"]:
            key = "HCP_1200/" + e["URI"]
            assert hashlib.md5(wl.path_of(key).read_bytes()).hexdigest() == e["Checksum"] == by_key[key].md5
    # up to date: loading it again does not rewrite anything
    again = w.generate("subject-tiny", tmp_path)
    assert [(o.key, o.size, o.md5) for o in again.objects] == [(o.key, o.size, o.md5) for o in wl.objects]
    assert w.check_manifests(again)["ok"]
