"""Datasets: embedded synthetic sets that make every notebook run offline, folder datasets (classification
and segmentation), checks, augmentation and splits."""

from nbtools.data.augcheck import check_augmentation
from nbtools.data.augment2d import AlbumentationsDataset, document_augmentation
from nbtools.data.augment3d import Augment3D
from nbtools.data.augreport import AugIssue, AugReport
from nbtools.data.cache import VolumeCache
from nbtools.data.checked import SampleError
from nbtools.data.documents import SyntheticDocuments
from nbtools.data.file_check import BadFilesError, FileCheck, check_files
from nbtools.data.fingerprint import DataChange, compare_fingerprints, data_fingerprint
from nbtools.data.folders import VolumeFolder
from nbtools.data.images import ImageFolder, ImageReadError, image_folder
from nbtools.data.patches import PatchBox
from nbtools.data.regression_folder import RegressionFolder
from nbtools.data.report import DataIssue, DataReport
from nbtools.data.segcases import SegmentationDataError
from nbtools.data.segfolder import SegmentationFolder
from nbtools.data.segsynthetic import SyntheticSegImages, SyntheticSegVolumes
from nbtools.data.segwrite import write_segmentation_folder
from nbtools.data.splits import holdout_split, kfold
from nbtools.data.synthetic import SyntheticVolumes
from nbtools.data.synthetic_regression import SyntheticRegressionVolumes
from nbtools.data.validate import validate_dataset
from nbtools.data.volumes import VolumeReadError

__all__ = [
    "AlbumentationsDataset",
    "AugIssue",
    "AugReport",
    "Augment3D",
    "BadFilesError",
    "DataChange",
    "DataIssue",
    "DataReport",
    "FileCheck",
    "ImageFolder",
    "ImageReadError",
    "PatchBox",
    "RegressionFolder",
    "SampleError",
    "SegmentationDataError",
    "SegmentationFolder",
    "SyntheticDocuments",
    "SyntheticRegressionVolumes",
    "SyntheticSegImages",
    "SyntheticSegVolumes",
    "SyntheticVolumes",
    "VolumeCache",
    "VolumeFolder",
    "VolumeReadError",
    "check_augmentation",
    "check_files",
    "compare_fingerprints",
    "data_fingerprint",
    "document_augmentation",
    "holdout_split",
    "image_folder",
    "kfold",
    "validate_dataset",
    "write_segmentation_folder",
]
