#!/usr/bin/env bash
# Installs Mesa 26.1's lavapipe (Debian trixie-backports, LLVM 19) into a
# private folder on this Debian 12 machine, with trixie's own C library and
# loader beside it, and writes a launcher that runs a command on it:
#
#   scripts/lavapipe-coop.sh ROOT            # fetch and unpack (about 70 MB)
#   ROOT/run <binary> [args...]              # run a binary on that driver
#
# Why: this lavapipe lists VK_KHR_cooperative_matrix (8x8x8 f16 x f16 -> f32
# at subgroup scope), which is what wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX
# needs, so the cooperative-matrix kernels are tested without a GPU. Nothing
# of the system is changed: packages are fetched by name from the two suites
# (not by version: superseded versions leave the archive) with a private
# sources list and apt state, unpacked with dpkg -x, and the launcher starts
# the binary with trixie's ld.so and library path. The versions fetched are
# printed. Fails, naming the package, when one cannot be fetched.
set -euo pipefail
ROOT=${1:?usage: scripts/lavapipe-coop.sh ROOT}
mkdir -p "$ROOT"
ROOT=$(cd "$ROOT" && pwd)
APT="$ROOT/apt"
mkdir -p "$APT/state/lists/partial" "$APT/cache/archives/partial" "$ROOT/debs" "$ROOT/sysroot"
KEY=/usr/share/keyrings/debian-archive-keyring.gpg
cat >"$APT/sources.list" <<EOF
deb [signed-by=$KEY] http://deb.debian.org/debian trixie main
deb [signed-by=$KEY] http://deb.debian.org/debian trixie-backports main
EOF
OPTS=(-o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State=$APT/state" -o "Dir::Cache=$APT/cache" -o Dir::State::status=/dev/null
      -o APT::Sandbox::User=root)

# The driver from backports; what it links against from trixie.
DRIVER=mesa-vulkan-drivers/trixie-backports
LIBS="libc6 libstdc++6 libgcc-s1 libllvm19 libdrm2 libdrm-amdgpu1 libelf1t64
      libdisplay-info2 libpng16-16t64 libwayland-client0 libzstd1 libvulkan1 libffi8
      libedit2 libxml2 libz3-4 libtinfo6 zlib1g libbsd0 libmd0 liblzma5 libicu76"

if [ ! -e "$ROOT/.unpacked" ]; then
    apt-get "${OPTS[@]}" -qq update
    cd "$ROOT/debs"
    for p in $DRIVER $(for l in $LIBS; do echo "$l/trixie"; done); do
        apt-get "${OPTS[@]}" -qq download "$p" 2>/dev/null \
            || { echo "lavapipe-coop: cannot fetch $p from Debian" >&2; exit 1; }
    done
    for deb in "$ROOT"/debs/*.deb; do dpkg -x "$deb" "$ROOT/sysroot"; done
    cd - >/dev/null
    touch "$ROOT/.unpacked"
fi
for deb in "$ROOT"/debs/*.deb; do dpkg-deb -f "$deb" Package Version | paste -sd' '; done

SYS="$ROOT/sysroot"
ICD=$(find "$SYS/usr/share/vulkan/icd.d" -name 'lvp_icd*.json' | head -1)
[ -n "$ICD" ] || { echo "lavapipe-coop: no lvp_icd json in $SYS" >&2; exit 1; }
# The ICD names its library by absolute path in /usr; point it into the sysroot.
LIB=$(find "$SYS" -name 'libvulkan_lvp.so' | head -1)
sed "s#\"library_path\": *\"[^\"]*\"#\"library_path\": \"$LIB\"#" "$ICD" >"$ROOT/lvp_icd.json"
cat >"$ROOT/run" <<EOF
#!/usr/bin/env bash
# Runs a command's binary on Mesa 26.1's lavapipe with trixie's loader.
export VK_ICD_FILENAMES="$ROOT/lvp_icd.json" VK_DRIVER_FILES="$ROOT/lvp_icd.json"
export RESNET_WGPU_EXPECT_ADAPTER="\${RESNET_WGPU_EXPECT_ADAPTER:-LLVM 19}"
export RESNET_WGPU_EXPECT_COOP=1
exec "$SYS/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \\
    --library-path "$SYS/usr/lib/x86_64-linux-gnu:$SYS/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" "\$@"
EOF
chmod +x "$ROOT/run"
echo "lavapipe-coop: ready, run binaries with $ROOT/run"
