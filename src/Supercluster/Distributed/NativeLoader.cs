using System.Runtime.InteropServices;

namespace Supercluster.Distributed;

/// <summary>dlopen with RTLD_GLOBAL (NativeLibrary.Load uses RTLD_LOCAL), for libraries whose plugins need their symbols.</summary>
static class NativeLoader
{
    public static bool TryLoadGlobal(string name, out IntPtr handle, out string error)
    {
        handle = dlopen(name, RtldNow | RtldGlobal);
        if (handle != IntPtr.Zero) { error = ""; return true; }
        error = Marshal.PtrToStringUTF8(dlerror()) ?? "not found";
        return false;
    }

    const int RtldNow = 2, RtldGlobal = 0x100;
    [DllImport("libc.so.6")] static extern IntPtr dlopen(string file, int mode);
    [DllImport("libc.so.6")] static extern IntPtr dlerror();
}
