/*
 * Make this x86-64 Linux machine look like one with AVX2 alone, for benchmarks.
 *
 * Loaded with LD_PRELOAD (scripts/avx2_only.sh builds it and runs a command so), it asks
 * the kernel to fault on the CPUID instruction (arch_prctl(ARCH_SET_CPUID, 0), which needs
 * the CPU's "cpuid_fault" flag) and answers every later CPUID itself: the real answer,
 * with AVX-512, AMX and AVX-VNNI taken out. Libraries that pick their kernels by CPUID
 * when they load or first run (ONNX Runtime's MLAS, OpenCV, numpy) then take the code
 * paths of a CPU without them: ONNX Runtime's int8 products go through VPMADDUBSW, whose
 * 16-bit sums can saturate, as on an AVX2-only machine. The clock, caches and memory stay
 * this machine's, so times are those of a fast AVX2 CPU, not of an older one.
 *
 * glibc reads CPUID before this library loads, so its own string functions keep their
 * AVX-512 forms; they are a negligible part of fer8's time. A process that installs its
 * own SIGSEGV handler afterwards (Python's faulthandler, pytest) loses the emulation for
 * CPUID calls made after that, and dies on the first one.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define BIT(n) (1u << (n))

static struct sigaction previous;

static void real_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4]) {
    /* CPUID faults while the emulation is on: switch it off around the real instruction. */
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __cpuid_count(leaf, subleaf, out[0], out[1], out[2], out[3]);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
}

static void mask(uint32_t leaf, uint32_t subleaf, uint32_t r[4]) {
    enum { EAX, EBX, ECX, EDX };
    if (leaf == 7 && subleaf == 0) {
        /* AVX512 F, DQ, IFMA, PF, ER, CD, BW, VL */
        r[EBX] &= ~(BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31));
        /* AVX512 VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ */
        r[ECX] &= ~(BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14));
        /* AVX512 4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, AVX512-FP16, AMX-TILE, AMX-INT8;
           AVX10 */
        r[EDX] &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(19) | BIT(22) | BIT(23) | BIT(24) | BIT(25));
    } else if (leaf == 7 && subleaf == 1) {
        /* AVX-VNNI, AVX512-BF16, AMX-FP16, AVX-IFMA */
        r[EAX] &= ~(BIT(4) | BIT(5) | BIT(21) | BIT(23));
        /* AVX-VNNI-INT8, AVX-NE-CONVERT, AMX-COMPLEX, AVX-VNNI-INT16, AVX10 */
        r[EDX] &= ~(BIT(4) | BIT(5) | BIT(8) | BIT(10) | BIT(19));
    } else if (leaf == 0x1d || leaf == 0x1e || leaf == 0x24) {
        /* AMX's tile and TMUL descriptions, AVX10's version */
        memset(r, 0, 4 * sizeof r[0]);
    }
}

static void on_segv(int signo, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *regs = uc->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)regs[REG_RIP];
    if (info->si_code > 0 && ip[0] == 0x0f && ip[1] == 0xa2) {
        int saved_errno = errno;
        uint32_t leaf = (uint32_t)regs[REG_RAX], subleaf = (uint32_t)regs[REG_RCX], r[4];
        real_cpuid(leaf, subleaf, r);
        mask(leaf, subleaf, r);
        regs[REG_RAX] = r[0];
        regs[REG_RBX] = r[1];
        regs[REG_RCX] = r[2];
        regs[REG_RDX] = r[3];
        regs[REG_RIP] += 2;
        errno = saved_errno;
        return;
    }
    /* A real fault: hand it on as if this library were not here. */
    sigaction(SIGSEGV, &previous, NULL);
    (void)signo;
}

__attribute__((constructor)) static void start(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, &previous) != 0 ||
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        fprintf(stderr, "avx2_only: cannot fault on CPUID here (%s); no cpuid_fault flag?\n",
                strerror(errno));
        _exit(3);
    }
}
