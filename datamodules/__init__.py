"""DataModules and data sources of ml-lectures."""

from datamodules.image import ImageDataModule
from datamodules.sources import DigitsSource, HFDatasetSource, IDXSource, ImageFolderSource, ImageSource

__all__ = ["DigitsSource", "HFDatasetSource", "IDXSource", "ImageDataModule", "ImageFolderSource", "ImageSource"]
