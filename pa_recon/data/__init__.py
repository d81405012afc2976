"""Data layer: procedural vessel phantoms, vessel-mask folders, the HDF5 file layouts (``data_specs/``) with
their validator, readers and writers, and IPASC import. Imports nothing from the other layers.
Also readers for the flow benchmarks: MNIST (``data.mnist``), CIFAR-10 and super-resolution image sets."""

from pa_recon.data.hdf5io import (
    Measurements,
    Phantoms,
    Reconstructions,
    ReconstructionWriter,
    data_digest,
    file_kind,
    n_scans,
    read_measurements,
    read_phantoms,
    read_reconstructions,
    reconstruction_writer,
    write_measurements,
    write_phantoms,
    write_reconstructions,
)
from pa_recon.data.cifar import CLASSES as CIFAR10_CLASSES
from pa_recon.data.cifar import load_cifar10
from pa_recon.data.families import make_phantoms
from pa_recon.data.ipasc import import_ipasc
from pa_recon.data.phantoms import VesselParams, downsample, vessel_phantom, vessel_phantoms
from pa_recon.data.sr_images import PatchSampler, imresize, modcrop, read_image, read_image_folder
from pa_recon.data.spec import FileSpec, load_spec, spec_names, validate_file
from pa_recon.data.vessel_masks import CropParams, VesselMaskFolder

__all__ = [
    "CIFAR10_CLASSES",
    "PatchSampler",
    "CropParams",
    "FileSpec",
    "Measurements",
    "Phantoms",
    "ReconstructionWriter",
    "Reconstructions",
    "VesselMaskFolder",
    "VesselParams",
    "data_digest",
    "downsample",
    "file_kind",
    "import_ipasc",
    "imresize",
    "load_cifar10",
    "load_spec",
    "make_phantoms",
    "modcrop",
    "n_scans",
    "read_image",
    "read_image_folder",
    "read_measurements",
    "read_phantoms",
    "read_reconstructions",
    "reconstruction_writer",
    "spec_names",
    "validate_file",
    "vessel_phantom",
    "vessel_phantoms",
    "write_measurements",
    "write_phantoms",
    "write_reconstructions",
]
