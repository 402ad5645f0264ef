/* Baton's x86_64 entry points.
 *
 *  _start_pvh     QEMU -kernel (PVH): 32-bit protected mode, paging off,
 *                 ebx = physical address of hvm_start_info. The image sits at
 *                 its link-time physical address (p_paddr).
 *  _start_kho     A previous Baton (KHO): 64-bit mode, identity-mapped paging
 *                 from the previous kernel's control page, rdi = physical
 *                 address of the KHO root FDT, rsi = physical address of
 *                 Baton's boot description (a sub-FDT). The image sits wherever the
 *                 previous kernel copied it (2 MiB aligned).
 *  _start_limine  Limine: 64-bit mode, higher half already mapped by Limine.
 *
 * The first two converge on `common64`, which is position independent: it
 * finds the image's physical address RIP-relatively, builds the boot page
 * tables (identity + direct map of low memory, the image at its link address)
 * and jumps to Rust in the higher half. */

.set KERNEL_VMA,        0xffffffff80000000
.set KERNEL_PHYS_LINK,  0x200000
.set BOOT_KIND_PVH,     1
.set BOOT_KIND_KHO,     3
.set PTE_PRESENT_WRITE, 0x3
.set PTE_LARGE,         0x83

/* ---- ELF notes --------------------------------------------------------- */

.section .note.pvh, "a", @note
.balign 4
.long 4                     /* name size */
.long 8                     /* descriptor size */
.long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
.asciz "Xen"
.balign 4
.quad _start_pvh - KERNEL_VMA
.balign 4

/* Baton's own note: where a previous Baton enters this image (see
 * docs/handover.md, "The kernel image"). */
.section .note.baton, "a", @note
.balign 4
.long 6
.long 8
.long {kho_entry_note}      /* baton_image::BATON_NOTE_KHO_ENTRY */
.asciz "Baton"
.balign 4
.quad _start_kho
.balign 4

/* ---- 32-bit PVH entry -------------------------------------------------- */

.section .text.boot, "ax"
.code32
.global _start_pvh
_start_pvh:
    cli
    cld
    mov %ebx, %esi
    /* The static PVH tables identity-map the first GiB with 2 MiB pages. */
    mov $(pvh_pml4 - KERNEL_VMA), %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax                  /* PAE */
    mov %eax, %cr4
    mov $0xc0000080, %ecx           /* EFER */
    rdmsr
    or $0x100, %eax                 /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax            /* PG | PE */
    mov %eax, %cr0
    lgdt (pvh_gdt_pointer - KERNEL_VMA)
    ljmp $0x08, $(pvh_long_mode - KERNEL_VMA)

.code64
pvh_long_mode:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    mov %esi, %esi                  /* zero-extend the start info address */
    mov $BOOT_KIND_PVH, %edi
    xor %r10d, %r10d
    jmp common64

/* ---- 64-bit KHO entry -------------------------------------------------- */

.global _start_kho
_start_kho:
    cli
    cld
    mov %rsi, %r10
    mov %rdi, %rsi
    mov $BOOT_KIND_KHO, %edi
    jmp common64

/* ---- Common, position-independent 64-bit path -------------------------- */

/* rdi = boot kind, rsi = argument, r10 = second argument; running
 * identity-mapped. */
common64:
    mov %rdi, %r12
    mov %rsi, %r13
    mov %r10, %rbp
    lea __kernel_start(%rip), %r15  /* physical address of the image */
    mov %r15, %r14
    sub $KERNEL_PHYS_LINK, %r14     /* r14 = load offset against the link address */
    test $0x1fffff, %r14
    jnz boot_halt

    /* Zero the bss (it holds the boot tables and the boot stack). */
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    shr $3, %rcx
    xor %eax, %eax
    rep stosq

    /* PML4: [0] identity, [256] direct map (both share one PDPT), [511] image. */
    lea boot_pml4(%rip), %rdi
    lea boot_pdpt_low(%rip), %rax
    or $PTE_PRESENT_WRITE, %rax
    mov %rax, (%rdi)
    mov %rax, 256*8(%rdi)
    lea boot_pdpt_high(%rip), %rax
    or $PTE_PRESENT_WRITE, %rax
    mov %rax, 511*8(%rdi)

    /* Low memory: 512 GiB with 1 GiB pages when the CPU has them, else the
     * first 4 GiB with 2 MiB pages. */
    mov $0x80000001, %eax
    cpuid
    bt $26, %edx
    jnc 2f
    lea boot_pdpt_low(%rip), %rdi
    mov $PTE_LARGE, %eax
    mov $512, %ecx
1:  mov %rax, (%rdi)
    add $0x40000000, %rax
    add $8, %rdi
    dec %ecx
    jnz 1b
    jmp 4f
2:  lea boot_pdpt_low(%rip), %rdi
    lea boot_pd_low(%rip), %rax
    or $PTE_PRESENT_WRITE, %rax
    mov $4, %ecx
3:  mov %rax, (%rdi)
    add $4096, %rax
    add $8, %rdi
    dec %ecx
    jnz 3b
    lea boot_pd_low(%rip), %rdi
    mov $PTE_LARGE, %eax
    mov $2048, %ecx
5:  mov %rax, (%rdi)
    add $0x200000, %rax
    add $8, %rdi
    dec %ecx
    jnz 5b

    /* The image: 64 MiB from KERNEL_VMA with 2 MiB pages, shifted by r14. */
4:  lea boot_pdpt_high(%rip), %rdi
    lea boot_pd_image(%rip), %rax
    or $PTE_PRESENT_WRITE, %rax
    mov %rax, 510*8(%rdi)
    lea boot_pd_image(%rip), %rdi
    mov %r14, %rax
    or $PTE_LARGE, %rax
    mov $32, %ecx
6:  mov %rax, (%rdi)
    add $0x200000, %rax
    add $8, %rdi
    dec %ecx
    jnz 6b

    lea boot_pml4(%rip), %rax
    mov %rax, %cr3

    movabs $boot_stack_top, %rsp
    mov %rbp, %rcx
    xor %ebp, %ebp
    mov %r12, %rdi
    mov %r13, %rsi
    mov %r15, %rdx
    movabs $boot_entry_direct, %rax
    call *%rax
boot_halt:
    cli
    hlt
    jmp boot_halt

/* ---- Limine entry ------------------------------------------------------ */

.section .text, "ax"
.global _start_limine
_start_limine:
    lea boot_stack_top(%rip), %rsp
    xor %ebp, %ebp
    call boot_entry_limine
    ud2

/* ---- Static data for the 32-bit path ------------------------------------ */

.section .data.pvh, "aw"
.balign 4096
pvh_pml4:
    .quad (pvh_pdpt - KERNEL_VMA) + PTE_PRESENT_WRITE
    .fill 511, 8, 0
pvh_pdpt:
    .quad (pvh_pd - KERNEL_VMA) + PTE_PRESENT_WRITE
    .fill 511, 8, 0
pvh_pd:
    .set pvh_page, 0
    .rept 512
    .quad (pvh_page << 21) + PTE_LARGE
    .set pvh_page, pvh_page + 1
    .endr

.balign 16
pvh_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff        /* 0x10: data */
pvh_gdt_end:
pvh_gdt_pointer:
    .word pvh_gdt_end - pvh_gdt - 1
    .quad pvh_gdt - KERNEL_VMA

/* ---- Boot page tables and stack (bss, zeroed by common64 or the loader) - */

.section .bss.boot, "aw", @nobits
.balign 4096
.global boot_pml4
boot_pml4:      .skip 4096
boot_pdpt_low:  .skip 4096
boot_pd_low:    .skip 4 * 4096
boot_pdpt_high: .skip 4096
boot_pd_image:  .skip 4096
.balign 16
.global boot_stack_guard
boot_stack_guard: .skip 4096
boot_stack:     .skip 256 * 1024
.global boot_stack_top
boot_stack_top:
