/* Baton's aarch64 entry points.
 *
 *  _start_image   QEMU -kernel through the arm64 Linux Image header: MMU off,
 *                 EL1 (or EL2), x0 = physical address of the DTB.
 *  _start_kho     A previous Baton (KHO): MMU off, EL1, x0 = physical
 *                 address of the KHO root FDT, x1 = physical address of
 *                 Baton's boot description (a sub-FDT).
 *  _start_limine  Limine: EL1, MMU on, higher half mapped in TTBR1.
 *
 * The first two converge on `common_entry`, which is position independent:
 * it finds the image with adrp, builds the boot translation tables (identity
 * and direct map of the first 512 GiB as normal memory, the image at its link
 * address), turns the MMU on and jumps to Rust in the higher half. */

.set BOOT_KIND_IMAGE,   2
.set BOOT_KIND_KHO,     3
.set DESC_TABLE,        0x3
/* Block: valid, AttrIndx=1 (normal WB), inner shareable, access flag. */
.set DESC_BLOCK_NORMAL, 0x705
/* T0SZ=T1SZ=16, 4 KiB granules, WB WA inner shareable walks. */
.set TCR_VALUE,         0xB5103510
/* MAIR: attr0 = device nGnRE, attr1 = normal write-back. */
.set MAIR_VALUE,        0xff04

/* ---- arm64 Image header (must be the first bytes of the image) ---------- */

.section .text.head, "ax"
.global _image_header
_image_header:
    b _start_image              /* code0 */
    .long 0                     /* code1 */
    .quad 0                     /* text_offset */
    .quad __kernel_size         /* image_size, including bss */
    .quad 0xa                   /* flags: little endian, 4 KiB pages, anywhere */
    .quad 0, 0, 0               /* reserved */
    .ascii "ARM\x64"            /* magic */
    .long 0                     /* no PE header */

/* Baton's own note: where a previous Baton enters this image. */
.section .note.baton, "a", %note
.balign 4
.long 6
.long 8
.long {kho_entry_note}          /* baton_image::BATON_NOTE_KHO_ENTRY */
.asciz "Baton"
.balign 4
.quad _start_kho
.balign 4

.section .text.boot, "ax"
_start_image:
    mov x20, x0
    mov x22, xzr
    mov x19, #BOOT_KIND_IMAGE
    b common_entry

.global _start_kho
_start_kho:
    mov x20, x0
    mov x22, x1
    mov x19, #BOOT_KIND_KHO
    b common_entry

common_entry:
    msr daifset, #0xf
    /* Drop from EL2 to EL1 when entered at EL2. */
    mrs x0, CurrentEL
    lsr x0, x0, #2
    cmp x0, #2
    b.ne 1f
    mov x0, #(1 << 31)          /* HCR_EL2.RW: EL1 is AArch64 */
    msr hcr_el2, x0
    mov x0, #0x33ff             /* CPTR_EL2: no FP/SIMD traps */
    msr cptr_el2, x0
    msr hstr_el2, xzr
    mrs x0, cnthctl_el2
    orr x0, x0, #3              /* EL1 may use the physical timer and counter */
    msr cnthctl_el2, x0
    msr cntvoff_el2, xzr
    mov x0, #0x3c5              /* EL1h with DAIF masked */
    msr spsr_el2, x0
    adr x0, 1f
    msr elr_el2, x0
    eret
1:
    /* x21 = physical address of the image; it must be 2 MiB aligned. */
    adrp x21, __kernel_start
    add x21, x21, :lo12:__kernel_start
    tst x21, #0x1fffff
    b.ne boot_halt

    /* Zero the bss (boot tables and boot stack live there). */
    adrp x0, __bss_start
    add x0, x0, :lo12:__bss_start
    adrp x1, __bss_end
    add x1, x1, :lo12:__bss_end
2:  cmp x0, x1
    b.hs 3f
    stp xzr, xzr, [x0], #16
    b 2b
3:
    /* Level 1: 512 GiB of 1 GiB normal blocks, shared by identity and direct map. */
    adrp x0, boot_l1_low
    add x0, x0, :lo12:boot_l1_low
    mov x1, #DESC_BLOCK_NORMAL
    mov x2, #512
    mov x3, #0x40000000
4:  str x1, [x0], #8
    add x1, x1, x3
    subs x2, x2, #1
    b.ne 4b

    /* TTBR0 level 0: [0] -> low. TTBR1 level 0: [0] -> low (direct map at
     * 0xffff000000000000), [511] -> image level 1. */
    adrp x0, boot_l1_low
    add x0, x0, :lo12:boot_l1_low
    orr x0, x0, #DESC_TABLE
    adrp x1, boot_l0_identity
    add x1, x1, :lo12:boot_l0_identity
    str x0, [x1]
    adrp x1, boot_l0_high
    add x1, x1, :lo12:boot_l0_high
    str x0, [x1]
    adrp x0, boot_l1_image
    add x0, x0, :lo12:boot_l1_image
    orr x0, x0, #DESC_TABLE
    str x0, [x1, #511 * 8]

    /* Image level 1 [510] -> level 2 with 32 blocks of 2 MiB from x21. */
    adrp x0, boot_l2_image
    add x0, x0, :lo12:boot_l2_image
    orr x2, x0, #DESC_TABLE
    adrp x1, boot_l1_image
    add x1, x1, :lo12:boot_l1_image
    str x2, [x1, #510 * 8]
    mov x1, #DESC_BLOCK_NORMAL
    orr x1, x1, x21
    mov x2, #32
    mov x3, #0x200000
5:  str x1, [x0], #8
    add x1, x1, x3
    subs x2, x2, #1
    b.ne 5b

    /* Discard stale cache lines over the tables written with the MMU off. */
    adrp x0, boot_l0_identity
    add x0, x0, :lo12:boot_l0_identity
    adrp x1, boot_tables_end
    add x1, x1, :lo12:boot_tables_end
6:  dc ivac, x0
    add x0, x0, #64
    cmp x0, x1
    b.lo 6b
    dsb sy

    ldr x0, =MAIR_VALUE
    msr mair_el1, x0
    mrs x1, id_aa64mmfr0_el1
    and x1, x1, #0x7            /* PARange -> TCR.IPS */
    ldr x0, =TCR_VALUE
    orr x0, x0, x1, lsl #32
    msr tcr_el1, x0
    adrp x0, boot_l0_identity
    add x0, x0, :lo12:boot_l0_identity
    msr ttbr0_el1, x0
    adrp x0, boot_l0_high
    add x0, x0, :lo12:boot_l0_high
    msr ttbr1_el1, x0
    isb
    tlbi vmalle1
    dsb nsh
    isb
    mrs x0, sctlr_el1
    mov x1, #((1 << 0) | (1 << 2) | (1 << 12))    /* M, C, I */
    orr x0, x0, x1
    ldr x1, =((1 << 1) | (1 << 19))                /* A, WXN */
    bic x0, x0, x1
    msr sctlr_el1, x0
    isb

    ldr x0, =boot_stack_top
    mov sp, x0
    mov x29, xzr
    mov x0, x19
    mov x1, x20
    mov x2, x21
    mov x3, x22
    ldr x4, =boot_entry_direct
    blr x4
boot_halt:
    wfe
    b boot_halt
.ltorg

/* ---- Limine entry ------------------------------------------------------ */

.section .text, "ax"
.global _start_limine
_start_limine:
    /* Limine enters at EL1 using SP_EL0 (EL1t); exceptions use SP_EL1, so
     * select it before installing the boot stack. */
    msr spsel, #1
    ldr x0, =boot_stack_top
    mov sp, x0
    mov x29, xzr
    bl boot_entry_limine
    brk #0
.ltorg

/* ---- Boot translation tables and stack --------------------------------- */

.section .bss.boot, "aw", %nobits
.balign 4096
.global boot_l0_identity
boot_l0_identity: .skip 4096
.global boot_l0_high
boot_l0_high:     .skip 4096
boot_l1_low:      .skip 4096
.global boot_l1_image
boot_l1_image:    .skip 4096
boot_l2_image:    .skip 4096
boot_tables_end:
.balign 16
.global boot_stack_guard
boot_stack_guard: .skip 4096
boot_stack:       .skip 256 * 1024
.global boot_stack_top
boot_stack_top:
