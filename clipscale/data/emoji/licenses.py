"""DIR/LICENSES/: who drew each art set, under which licence, and the packages' own licence files.

The art licences are stated here rather than read from the packages because the packages' own
`license` field is the data's (MIT for emoji-datasource) and the art licences live only in prose
(emoji-datasource's README; OpenMoji's LICENSE.txt is the CC BY-SA text itself).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from clipscale.data.emoji.concepts import STYLE_PACKAGES
from clipscale.data.emoji.packages import NAMES_PACKAGE, Packages

# style -> (art set, licence, authors, licence text address)
ART = {
    "google": ("Noto Emoji (Google)", "Apache-2.0", "Google Inc. and the Noto Emoji contributors",
               "https://www.apache.org/licenses/LICENSE-2.0"),
    "twitter": ("Twemoji", "CC-BY-4.0", "Twitter, Inc. (now X Corp.) and other contributors "
                "(Twemoji fork maintained by jdecked)", "https://creativecommons.org/licenses/by/4.0/"),
    "openmoji": ("OpenMoji", "CC-BY-SA-4.0", "OpenMoji, the open-source emoji and icon project of HfG "
                 "Schwäbisch Gmünd (Benedikt Groß, Daniel Utz and the OpenMoji contributors)",
                 "https://creativecommons.org/licenses/by-sa/4.0/"),
}
DATA = {
    "emoji-datasource-google": ("MIT", "Cal Henderson", "emoji metadata (emoji.json); the PNGs are Noto's"),
    "emoji-datasource-twitter": ("MIT", "Cal Henderson",
                                 "emoji metadata (emoji.json); the PNGs are Twemoji's"),
    NAMES_PACKAGE: ("MIT", "Miles Johnson", "CLDR English names, keywords, groups and subgroups"),
}


def attribution_text(styles: list[str], packages: Packages) -> str:
    lines = ["Attribution for the emoji dataset written by `clipscale data emoji`.", "",
             "Images (each style's shards and eval sets are adaptations of its art set: decoded or",
             "rendered, composited on white and resized; they are shared under the art set's licence):", ""]
    for style in styles:
        title, licence, authors, url = ART[style]
        package = STYLE_PACKAGES[style]
        lines += [f"- {style}: {title}, {licence} ({url})", f"  by {authors}",
                  f"  from npm package {package}@{packages.versions[package]}"]
    lines += ["", "Captions and metadata (the captions are built from CLDR English names and keywords):", ""]
    for package, (licence, author, what) in DATA.items():
        if package in packages.versions:
            lines += [f"- {package}@{packages.versions[package]}: {licence}, by {author}: {what}"]
    lines += ["", "The packages' own licence files are copied beside this file as <package>.<file>."]
    if "openmoji" in styles:
        lines += ["OpenMoji's attribution: All emojis designed by OpenMoji - the open-source emoji and",
                  "icon project. License: CC BY-SA 4.0. Adaptations must be shared under the same licence."]
    return "\n".join(lines) + "\n"


def copy_license_files(packages: Packages, dest: Path) -> list[str]:
    """Copy LICENSE* / LICENCE* / COPYING* from each package's root; return the names written."""
    written: list[str] = []
    for package in sorted(packages.versions):
        root = packages.dir(package)
        for path in sorted(root.iterdir()):
            if path.is_file() and path.name.upper().startswith(("LICENSE", "LICENCE", "COPYING")):
                name = f"{package}.{path.name}"
                shutil.copyfile(path, dest / name)
                written.append(name)
    return written
