"""Refuse HDF5 content that is not stored inside the file itself, and weights too big to load.

h5py follows HDF5 features that read other files when a dataset's values are read: external raw
storage (a dataset whose bytes live in, say, ``/etc/passwd``), external links (a group or dataset in
another file), and virtual datasets (a mapping of other files' datasets). A crafted model file would
turn another file's bytes into weights of the export. Keras never writes any of these, so
``check_hdf5`` walks the whole file by its links (``getlink=True``: nothing is followed or read) and
refuses each of them, soft links that dangle, loop, pass through such a link or point outside the
weights tree, and link types it does not know. It also adds up the declared sizes of the weight
datasets, so that a tiny file of compressed zeros that declares tens of GiB is refused before a
single value is read.
"""

from __future__ import annotations

import posixpath

import h5py

from converter.errors import BadModelFile
from converter.keras.limits import short, too_big

#: HDF5's own limit on soft links followed in one lookup; more is a loop.
_MAX_SOFT_HOPS = 16
#: Links in one file: a real model has a handful per layer; millions of empty links would take minutes.
MAX_LINKS = 100_000


class _Walk:
    def __init__(self, h5: h5py.File, where: str, weights_root: str) -> None:
        self.h5 = h5
        self.where = where  # the file as the user knows it: "m.h5", or "m.keras (model.weights.h5)"
        self.weights_root = weights_root.rstrip("/") or "/"

    def refuse(self, name: str, what: str) -> BadModelFile:
        return BadModelFile(
            f"{self.where}: {short(name, 80)[1:-1]} {what}; Keras never writes this, and data from outside "
            "the model file is never read. Re-save the model with Keras."
        )

    def in_weights(self, name: str) -> bool:
        root = self.weights_root
        return root == "/" or name == root or name.startswith(root + "/")

    def resolve(self, start: str, target: str) -> str:
        """Where a soft link from group ``start`` to ``target`` ends, following links by hand."""
        pending = posixpath.normpath(posixpath.join(start, target))
        for _ in range(_MAX_SOFT_HOPS):
            current = "/"
            parts = [p for p in pending.split("/") if p]
            for index, part in enumerate(parts):
                parent = self.h5[current]
                # links.exists looks at the link only: ``part in parent`` would follow it (and open another file)
                if not isinstance(parent, h5py.Group) or not parent.id.links.exists(part.encode()):
                    raise self.refuse(f"/{start.strip('/')}", f"has a soft link to {target}, which does not exist")
                link = parent.get(part, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    raise self.refuse(
                        posixpath.join(current, part), f"is an external link to {short(link.filename, 60, tail=True)}"
                    )
                if isinstance(link, h5py.SoftLink):
                    rest = "/".join(parts[index + 1 :])
                    pending = posixpath.normpath(posixpath.join(current, link.path, rest))
                    break
                current = posixpath.join(current, part)
            else:
                return current
        raise self.refuse(target, "is reached through soft links that loop")

    def check_link(self, group: str, name: str, link: object) -> str | None:
        """The path to walk into for a hard link; None for an accepted soft link."""
        full = posixpath.join(group, name)
        if isinstance(link, h5py.ExternalLink):
            target = f"{short(link.filename, 60, tail=True)}:{short(link.path, 40)}"
            raise self.refuse(full, f"is an external link to {target}")
        if isinstance(link, h5py.SoftLink):
            end = self.resolve(group, link.path)
            if not self.in_weights(end) or not self.in_weights(full):
                raise self.refuse(full, f"is a soft link to {short(link.path, 60)}, outside the weights")
            return None  # the object it names is walked where it is hard-linked
        if not isinstance(link, h5py.HardLink):
            raise self.refuse(full, f"is a link of an unknown kind ({type(link).__name__})")
        return full

    def check_dataset(self, name: str, dataset: h5py.Dataset) -> int:
        """Refuse storage outside the file; the bytes the dataset declares."""
        if dataset.is_virtual:
            raise self.refuse(name, "is a virtual dataset (its values come from other datasets or files)")
        external = dataset.external
        if external:
            raise self.refuse(name, f"stores its data in another file ({short(external[0][0], 60, tail=True)})")
        shape = dataset.shape or ()
        count = 1
        for dim in shape:
            count *= int(dim)
        return count * int(dataset.dtype.itemsize)


def check_hdf5(h5: h5py.File, where: str, weights_root: str, max_bytes: float) -> None:
    """Walk every link of ``h5``; raise ``BadModelFile`` for anything read from outside the file, or when
    the datasets under ``weights_root`` declare more than ``max_bytes``."""
    walk = _Walk(h5, where, weights_root)
    seen: set[tuple[int, int]] = set()
    total = links = 0
    pending = ["/"]
    if walk.weights_root != "/":
        link = h5.get(walk.weights_root, getlink=True)
        if link is not None:
            walk.check_link("/", walk.weights_root.lstrip("/"), link)  # refuses anything but a hard link
            if isinstance(link, h5py.HardLink):
                # The weights are walked first, so that an array hard-linked from elsewhere too is counted.
                pending.append(walk.weights_root)
    for root in pending:
        info = h5py.h5o.get_info(h5[root].id)
        seen.add((info.fileno, info.addr))
    while pending:
        group_name = pending.pop()
        group = h5[group_name]
        for name in group:
            links += 1
            if links > MAX_LINKS:
                raise BadModelFile(f"{where}: the HDF5 file holds more than {MAX_LINKS} objects; refusing it.")
            target = walk.check_link(group_name, name, group.get(name, getlink=True))
            if target is None:
                continue
            obj = group.get(name)
            info = h5py.h5o.get_info(obj.id)
            if (info.fileno, info.addr) in seen:
                continue  # a second hard link to an object already checked (or a cycle of groups)
            seen.add((info.fileno, info.addr))
            if isinstance(obj, h5py.Group):
                pending.append(target)
            elif isinstance(obj, h5py.Dataset):
                nbytes = walk.check_dataset(target, obj)
                if walk.in_weights(target):
                    total += nbytes
    if total > max_bytes:  # after the walk, so that the message gives the whole size
        raise too_big(where, "the model", total, max_bytes)
