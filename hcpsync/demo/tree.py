"""The file tree of a synthetic HCP subject: subject-relative paths and the download packages
that list them, after the real ``HCP_1200`` bucket (structural, task MOTOR, resting state REST1,
unprocessed scans, release notes)."""

from __future__ import annotations

from collections.abc import Iterable

# --- packages --------------------------------------------------------------------------------

PKG_MOTOR_PREPROC = "3T_tfMRI_MOTOR_preproc"
PKG_MOTOR_UNPROC = "3T_tfMRI_MOTOR_unproc"
PKG_MOTOR_ANALYSIS = "3T_tfMRI_MOTOR_analysis_s2"
PKG_STRUCT_PREPROC = "3T_Structural_preproc"
PKG_STRUCT_UNPROC = "3T_Structural_unproc"
PKG_REST1_PREPROC = "3T_rfMRI_REST1_preproc"

PACKAGES: tuple[str, ...] = (
    PKG_STRUCT_PREPROC,
    PKG_STRUCT_UNPROC,
    PKG_REST1_PREPROC,
    PKG_MOTOR_ANALYSIS,
    PKG_MOTOR_PREPROC,
    PKG_MOTOR_UNPROC,
)


# --- the tree --------------------------------------------------------------------------------

_S, _SU, _R, _MA, _MP, _MU = PACKAGES


#: (subject-relative path with ``{s}`` for the subject, packages that list it)
Entries = list[tuple[str, tuple[str, ...]]]

#: the two task MOTOR runs and their E-Prime tab file
_MOTOR_RUNS = (("tfMRI_MOTOR_LR", "MOTOR_run2_TAB.txt"), ("tfMRI_MOTOR_RL", "MOTOR_run1_TAB.txt"))
_MOTOR_EVS = ("Sync", "cue", "lf", "lh", "rf", "rh", "t")


def _entries(paths: Iterable[str], *pkgs: str) -> Entries:
    return [(p, pkgs) for p in paths]


def _t1w() -> Entries:
    """T1w/: native-space structural outputs, FreeSurfer, and the runs' distortion-corrected refs."""
    t = _entries(
        [
            "T1w/T1w_acpc_dc.nii.gz",
            "T1w/T1w_acpc_dc_restore.nii.gz",
            "T1w/T2w_acpc_dc_restore.nii.gz",
            "T1w/aparc+aseg.nii.gz",
            "T1w/brainmask_fs.nii.gz",
            "T1w/wmparc.nii.gz",
            "T1w/Native/{s}.L.white.native.surf.gii",
            "T1w/Native/{s}.R.white.native.surf.gii",
            "T1w/{s}/mri/aparc+aseg.mgz",
            "T1w/{s}/stats/aseg.stats",
            "T1w/{s}/surf/lh.white",
            "T1w/{s}/label/lh.cortex.label",
        ],
        _S,
    )
    t += _entries(["T1w/T1w_acpc_dc_restore_brain.nii.gz"], _S, _MP, _R)
    for run, _tab in _MOTOR_RUNS:
        t += _entries([f"T1w/Results/{run}/SBRef_dc.nii.gz", f"T1w/Results/{run}/PhaseOne_gdc_dc.nii.gz"], _MP)
    return t + _entries(["T1w/Results/rfMRI_REST1_LR/SBRef_dc.nii.gz"], _R)


def _mni() -> Entries:
    """MNINonLinear/: standard-space structural outputs and surfaces."""
    t = _entries(
        [
            "MNINonLinear/T1w_restore.nii.gz",
            "MNINonLinear/T2w_restore.nii.gz",
            "MNINonLinear/aparc+aseg.nii.gz",
            "MNINonLinear/brainmask_fs.nii.gz",
            "MNINonLinear/{s}.164k_fs_LR.wb.spec",
            "MNINonLinear/{s}.MyelinMap_BC.164k_fs_LR.dscalar.nii",
            "MNINonLinear/xfms/acpc_dc2standard.nii.gz",
            "MNINonLinear/fsaverage_LR32k/{s}.32k_fs_LR.wb.spec",
            "MNINonLinear/fsaverage_LR32k/{s}.MyelinMap_BC.32k_fs_LR.dscalar.nii",
            "MNINonLinear/fsaverage_LR32k/{s}.aparc.32k_fs_LR.dlabel.nii",
            "MNINonLinear/fsaverage_LR32k/{s}.L.thickness.32k_fs_LR.shape.gii",
            "MNINonLinear/fsaverage_LR32k/{s}.R.thickness.32k_fs_LR.shape.gii",
            "MNINonLinear/fsaverage_LR32k/{s}.L.aparc.32k_fs_LR.label.gii",
            "MNINonLinear/fsaverage_LR32k/{s}.R.aparc.32k_fs_LR.label.gii",
        ]
        + [
            f"MNINonLinear/fsaverage_LR32k/{{s}}.{h}.{surf}.32k_fs_LR.surf.gii"
            for surf in ("pial", "white", "very_inflated")
            for h in ("L", "R")
        ],
        _S,
    )
    return t + _entries(
        [
            "MNINonLinear/T1w_restore.2.nii.gz",
            "MNINonLinear/ROIs/ROIs.2.nii.gz",
            "MNINonLinear/ROIs/Atlas_ROIs.2.nii.gz",
            "MNINonLinear/fsaverage_LR32k/{s}.L.midthickness.32k_fs_LR.surf.gii",
            "MNINonLinear/fsaverage_LR32k/{s}.R.midthickness.32k_fs_LR.surf.gii",
        ],
        _S,
        _MP,
        _R,
    )


def _motor_runs(folder: str, names: tuple[str, ...], evs: str, pkg: str) -> Entries:
    """In ``folder/<run>`` of each MOTOR run: ``names`` (``{run}``, ``{tab}`` and ``{s}`` filled in) and
    the EV files under ``evs``, all listed by ``pkg``."""
    paths = []
    for run, tab in _MOTOR_RUNS:
        d = f"{folder}/{run}"
        paths += [f"{d}/" + n.format(run=run, tab=tab, s="{s}") for n in names]
        paths += [f"{d}/{evs}/{ev}.txt" for ev in _MOTOR_EVS]
    return _entries(paths, pkg)


_TASK_RUN = (
    "{run}_Atlas.dtseries.nii",
    "{run}_SBRef.nii.gz",
    "{run}_Physio_log.txt",
    "{run}_hp200_s4_level1.fsf",
    "{tab}",
    "Movement_Regressors.txt",
    "Movement_Regressors_dt.txt",
    "Movement_RelativeRMS.txt",
    "Movement_AbsoluteRMS_mean.txt",
    "PhaseOne_gdc_dc.nii.gz",
    "brainmask_fs.2.nii.gz",
)


def _task() -> Entries:
    """Task fMRI runs (MOTOR), minimally preprocessed, and their level-2 analysis (2 mm smoothing)."""
    feat = "MNINonLinear/Results/tfMRI_MOTOR/tfMRI_MOTOR_hp200_s2_level2.feat"
    return _motor_runs("MNINonLinear/Results", _TASK_RUN, "EVs", _MP) + _entries(
        [
            "MNINonLinear/Results/tfMRI_MOTOR/prepare_level2_feat_analysis.sh",
            f"{feat}/{{s}}_tfMRI_MOTOR_level2_hp200_s2.dscalar.nii",
            f"{feat}/Contrasts.txt",
            f"{feat}/design.fsf",
            f"{feat}/design.mat",
            f"{feat}/design.png",
        ]
        + [
            f"{feat}/GrayordinatesStats/cope{c}.feat/{m}.dtseries.nii"
            for c in (1, 2)
            for m in ("cope1", "zstat1")
        ],
        _MA,
    )


def _rest() -> Entries:
    """Resting state, run 1 (LR)."""
    d = "MNINonLinear/Results/rfMRI_REST1_LR"
    return _entries(
        [
            f"{d}/rfMRI_REST1_LR_Atlas.dtseries.nii",
            f"{d}/rfMRI_REST1_LR.nii.gz",
            f"{d}/rfMRI_REST1_LR_SBRef.nii.gz",
            f"{d}/rfMRI_REST1_LR_Physio_log.txt",
            f"{d}/Movement_Regressors.txt",
            f"{d}/Movement_RelativeRMS.txt",
            f"{d}/Movement_AbsoluteRMS_mean.txt",
            f"{d}/brainmask_fs.2.nii.gz",
        ],
        _R,
    )


_UNPROCESSED_RUN = (
    "{s}_3T_{run}.nii.gz",
    "{s}_3T_{run}_SBRef.nii.gz",
    "{s}_3T_SpinEchoFieldMap_LR.nii.gz",
    "{s}_3T_SpinEchoFieldMap_RL.nii.gz",
    "LINKED_DATA/EPRIME/{s}_3T_{tab}",
    "LINKED_DATA/PHYSIO/{s}_3T_{run}_Physio_log.txt",
)


def _unprocessed() -> Entries:
    """Unprocessed scans: the task runs with their field maps and linked data, the structurals."""
    return _motor_runs("unprocessed/3T", _UNPROCESSED_RUN, "LINKED_DATA/EPRIME/EVs", _MU) + _entries(
        [
            "unprocessed/3T/T1w_MPR1/{s}_3T_T1w_MPR1.nii.gz",
            "unprocessed/3T/T2w_SPC1/{s}_3T_T2w_SPC1.nii.gz",
        ],
        _SU,
    )


def _release_notes() -> Entries:
    """Release notes: in no package."""
    return _entries(
        [
            "release-notes/ReleaseNotes.txt",
            "release-notes/Structural_preproc.txt",
            "release-notes/rfMRI_REST1_preproc.txt",
            "release-notes/tfMRI_MOTOR_preproc.txt",
            "release-notes/tfMRI_MOTOR_unproc.txt",
        ],
    )


#: every file of a subject: (subject-relative path with ``{s}`` for the subject, packages that list it)
TREE: Entries = _t1w() + _mni() + _task() + _rest() + _unprocessed() + _release_notes()
