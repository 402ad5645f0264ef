/* The aarch64 kexec trampoline. It is copied into a control page outside
 * the destination and entered at its identity-mapped physical address
 * (TTBR0) with IRQs masked and the caches already cleaned over everything
 * it touches:
 *   x0 = copy list (entries of destination, source or 0 to zero, length)
 *   x1 = number of entries
 *   x2 = physical entry point of the next kernel
 *   x3 = KHO root FDT, x4 = boot description (passed on in x0, x1)
 *   x5 = where to store two counter readings (before and after the copy),
 *        or 0.
 * It turns the MMU and caches off, writes only words that differ from what
 * the destination holds, invalidates the instruction cache and jumps. It
 * uses no stack. */

.section .rodata.kexec, "a"
.global kexec_trampoline_start
.global kexec_trampoline_end
kexec_trampoline_start:
    mov x10, x5
    cbz x10, 0f
    isb
    mrs x11, cntvct_el0
    str x11, [x10]
0:  mrs x9, sctlr_el1
    bic x9, x9, #1              /* M: MMU off */
    bic x9, x9, #(1 << 2)       /* C: data cache off */
    bic x9, x9, #(1 << 12)      /* I: instruction cache off */
    msr sctlr_el1, x9
    isb
1:  cbz x1, 9f
    ldp x5, x6, [x0]            /* destination, source or 0 */
    ldr x7, [x0, #{length_offset}]  /* length */
2:  cmp x7, #8                  /* whole words */
    b.lo 5f
    mov x8, xzr
    cbz x6, 3f
    ldr x8, [x6], #8
3:  ldr x12, [x5]
    cmp x8, x12
    b.eq 4f
    str x8, [x5]
4:  add x5, x5, #8
    sub x7, x7, #8
    b 2b
5:  cbz x7, 8f                  /* the tail, byte by byte */
    mov w8, wzr
    cbz x6, 6f
    ldrb w8, [x6], #1
6:  ldrb w12, [x5]
    cmp w8, w12
    b.eq 7f
    strb w8, [x5]
7:  add x5, x5, #1
    sub x7, x7, #1
    b 5b
8:  add x0, x0, #{entry_bytes}
    sub x1, x1, #1
    b 1b
9:  cbz x10, 10f
    isb
    mrs x11, cntvct_el0
    str x11, [x10, #{second_stamp_offset}]
10: ic iallu
    dsb sy
    isb
    mov x0, x3
    mov x1, x4
    br x2
kexec_trampoline_end:
