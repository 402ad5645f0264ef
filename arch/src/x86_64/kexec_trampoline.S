/* The x86_64 kexec trampoline. It is copied into a control page outside
 * the destination and entered at its identity-mapped physical address with
 * interrupts off and page tables that identity-map all RAM:
 *   rdi = copy list (entries of destination, source or 0 to zero, length)
 *   rsi = number of entries
 *   rdx = physical entry point of the next kernel
 *   rcx = KHO root FDT, r8 = boot description (passed on in rdi, rsi)
 *   r14 = where to store two time-stamp counter readings (before and after
 *         the copy), or 0.
 * It writes only words that differ from what the destination holds, so an
 * update into the same image rewrites little (and emulators keep their
 * translations of it). It uses no stack and no memory but the list, so it
 * may overwrite the old kernel (which lives in scratch after the first
 * update). The names in braces are constants from arch/src/lib.rs
 * (`CopyEntry`). */

.section .rodata.kexec, "a"
.global kexec_trampoline_start
.global kexec_trampoline_end
.code64
kexec_trampoline_start:
    mov %rdx, %r11
    test %r14, %r14
    jz 0f
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, (%r14)
0:  mov %rcx, %r12
    mov %r8, %r13
    mov %rdi, %r9
    mov %rsi, %r10
1:  test %r10, %r10
    jz 9f
    mov (%r9), %rdi             /* destination */
    mov {source_offset}(%r9), %rsi  /* source, or 0 */
    mov {length_offset}(%r9), %rcx  /* length */
2:  cmp $8, %rcx                /* whole words */
    jb 5f
    xor %eax, %eax
    test %rsi, %rsi
    jz 3f
    mov (%rsi), %rax
    add $8, %rsi
3:  cmp (%rdi), %rax
    je 4f
    mov %rax, (%rdi)
4:  add $8, %rdi
    sub $8, %rcx
    jmp 2b
5:  test %rcx, %rcx             /* the tail, byte by byte */
    jz 8f
    xor %eax, %eax
    test %rsi, %rsi
    jz 6f
    movb (%rsi), %al
    inc %rsi
6:  cmpb (%rdi), %al
    je 7f
    movb %al, (%rdi)
7:  inc %rdi
    dec %rcx
    jmp 5b
8:  add ${entry_bytes}, %r9
    dec %r10
    jmp 1b
9:  test %r14, %r14
    jz 10f
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, {second_stamp_offset}(%r14)
10: mov %r12, %rdi
    mov %r13, %rsi
    jmp *%r11
kexec_trampoline_end:
