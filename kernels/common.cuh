// common.cuh: definitions shared by every kernel family.
//
// Not #included: the loader (invconv_cupy/kernel_source.py) concatenates
//     generated preamble + common.cuh + <family>.cu
// into one source string per (dtype, index type), so CuPy's disk cache, which
// hashes only that string, sees every byte. The preamble defines
//     ic_real   float or double        (the array dtype)
//     ic_index  int or long long       (flat offsets; 64-bit when sizes need it)
//     IC_REAL_IS_DOUBLE, IC_INDEX_IS_64  0 or 1
// No standard headers here: NVRTC has none.

#ifndef IC_EMULATOR
// Dynamic shared memory (the launch's shared_mem bytes), 16-byte aligned:
//     IC_DYNAMIC_SHARED(ic_real, tile);   // ic_real* tile
// The emulator's shim header defines the same macro for the CPU.
#define IC_DYNAMIC_SHARED(type, name)                                  \
    extern __shared__ __align__(16) unsigned char ic_dynamic_shared_[]; \
    type* name = reinterpret_cast<type*>(ic_dynamic_shared_)
#endif

#ifndef IC_EMULATOR
// Flag accesses between blocks (the emulator's shim defines the same names, and
// makes a spin on them visible to its scheduler and watchdog). Relaxed: a volatile
// access (ld.volatile / st.volatile). Acquire: the relaxed load, then a device-scope
// fence; release: the fence, then the relaxed store (__threadfence() is membar.gl,
// i.e. fence.sc.gpu). Portable across NVRTC versions, no inline PTX.
//     producer: write the tile; __syncthreads(); if (tid == 0) ic_store_release(flag, 1);
//     consumer: if (tid == 0) while (!ic_load_acquire(flag)) {} __syncthreads(); read it
template <class T> struct ic_identity {
    typedef T type;
};
template <class T> __device__ __forceinline__ T ic_load_relaxed(const T* p)
{
    return *(const volatile T*)p;
}
template <class T> __device__ __forceinline__ T ic_load_acquire(const T* p)
{
    const T v = *(const volatile T*)p;
    __threadfence();
    return v;
}
template <class T> __device__ __forceinline__ void ic_store_relaxed(T* p, typename ic_identity<T>::type v)
{
    *(volatile T*)p = v;
}
template <class T> __device__ __forceinline__ void ic_store_release(T* p, typename ic_identity<T>::type v)
{
    __threadfence();
    *(volatile T*)p = v;
}
#endif

// First flat thread index of a 1-D launch and its grid stride, in ic_index.
__device__ __forceinline__ ic_index ic_thread_index()
{
    return (ic_index)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ ic_index ic_grid_stride()
{
    return (ic_index)blockDim.x * gridDim.x;
}
