"""QEMU guest images for ostune: a trimmed Debian bookworm guest built with debootstrap."""

from targets.vm.image import GuestImage, build_image, default_image_cache_dir, recipe_hash

__all__ = ["GuestImage", "build_image", "default_image_cache_dir", "recipe_hash"]
