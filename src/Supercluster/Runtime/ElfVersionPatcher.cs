using System.Buffers.Binary;
using System.Text;

namespace Supercluster.Runtime;

/// <summary>
/// Edits the symbol-version requirements (ELF <c>.gnu.version_r</c>) of a 64-bit little-endian shared library.
/// libLibTorchSharp.so 0.107 requires GLIBCXX_3.4.32 only for the marker symbol
/// <c>std::ios_base_library_init</c>, which nothing calls; marking that requirement weak
/// (<c>vna_flags |= VER_FLG_WEAK</c>) lets the dynamic loader accept an older libstdc++ (Debian 12, Ubuntu 22.04).
/// </summary>
public static class ElfVersionPatcher
{
    const uint ShtGnuVerneed = 0x6ffffffe;
    const ushort VerFlgWeak = 0x2;

    /// <summary>One entry of the version-needs table: the library it is needed from, the version name, its flags.</summary>
    public readonly record struct VersionNeed(string File, string Version, ushort Flags)
    {
        public bool IsWeak => (Flags & VerFlgWeak) != 0;
    }

    /// <summary>Lists every version requirement of the library image.</summary>
    public static IReadOnlyList<VersionNeed> ReadVersionNeeds(ReadOnlySpan<byte> elf)
    {
        var list = new List<VersionNeed>();
        Walk(elf, (file, version, flags, _) => list.Add(new VersionNeed(file, version, flags)));
        return list;
    }

    /// <summary>Marks every requirement named <paramref name="version"/> weak, in place; returns how many were changed.</summary>
    public static int MarkWeak(Span<byte> elf, string version)
    {
        var offsets = new List<int>();
        Walk(elf, (_, v, flags, flagsOffset) => { if (v == version && (flags & VerFlgWeak) == 0) offsets.Add(flagsOffset); });
        foreach (var o in offsets)
        {
            var flags = BinaryPrimitives.ReadUInt16LittleEndian(elf[o..]);
            BinaryPrimitives.WriteUInt16LittleEndian(elf[o..], (ushort)(flags | VerFlgWeak));
        }
        return offsets.Count;
    }

    delegate void NeedVisitor(string file, string version, ushort flags, int flagsOffset);

    static void Walk(ReadOnlySpan<byte> elf, NeedVisitor visit)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException("only 64-bit little-endian ELF is supported");

        long shoff = BinaryPrimitives.ReadInt64LittleEndian(elf[0x28..]);
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3A..]);
        int shnum = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3C..]);


        for (int i = 0; i < shnum; i++)
        {
            var (type, offset, link) = Section(elf, shoff, shentsize, i);
            if (type != ShtGnuVerneed) continue;
            long strtab = Section(elf, shoff, shentsize, (int)link).offset;

            long vn = offset;
            while (true)
            {
                // Elf64_Verneed: vn_version u16, vn_cnt u16, vn_file u32, vn_aux u32, vn_next u32
                var need = elf[(int)vn..];
                int cnt = BinaryPrimitives.ReadUInt16LittleEndian(need[2..]);
                string file = CString(elf, strtab + BinaryPrimitives.ReadUInt32LittleEndian(need[4..]));
                long aux = vn + BinaryPrimitives.ReadUInt32LittleEndian(need[8..]);
                for (int a = 0; a < cnt; a++)
                {
                    // Elf64_Vernaux: vna_hash u32, vna_flags u16, vna_other u16, vna_name u32, vna_next u32
                    var vx = elf[(int)aux..];
                    ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(vx[4..]);
                    string name = CString(elf, strtab + BinaryPrimitives.ReadUInt32LittleEndian(vx[8..]));
                    visit(file, name, flags, (int)aux + 4);
                    uint nextAux = BinaryPrimitives.ReadUInt32LittleEndian(vx[12..]);
                    if (nextAux == 0) break;
                    aux += nextAux;
                }
                uint next = BinaryPrimitives.ReadUInt32LittleEndian(need[12..]);
                if (next == 0) break;
                vn += next;
            }
        }
    }

    static (uint type, long offset, uint link) Section(ReadOnlySpan<byte> elf, long shoff, int shentsize, int i)
    {
        // Elf64_Shdr: sh_type at 4, sh_offset at 0x18, sh_link at 0x28
        var s = elf.Slice(checked((int)(shoff + (long)i * shentsize)), shentsize);
        return (BinaryPrimitives.ReadUInt32LittleEndian(s[4..]), BinaryPrimitives.ReadInt64LittleEndian(s[0x18..]),
                BinaryPrimitives.ReadUInt32LittleEndian(s[0x28..]));
    }

    static string CString(ReadOnlySpan<byte> elf, long at)
    {
        var s = elf[(int)at..];
        int end = s.IndexOf((byte)0);
        return Encoding.ASCII.GetString(s[..end]);
    }
}
