/* x86_64 trap vectors: one 16-byte stub per vector pushes an error code (0
 * when the CPU pushes none) and the vector number, then `trap_common` saves
 * the general registers as a TrapFrame and calls `arch_trap_entry`, which
 * returns the frame to resume (possibly another thread's). */

.section .text, "ax"
.balign 16
.global trap_vectors
trap_vectors:
.set vector, 0
.rept 256
    .balign 16
    .if vector == 8 || vector == 17 || vector == 21 || vector == 29 || vector == 30
        .byte 0x6a, vector              /* push imm8 (error code already pushed) */
    .elseif vector >= 10 && vector <= 14
        .byte 0x6a, vector
    .else
        .byte 0x6a, 0                   /* push $0 */
        .if vector < 128
            .byte 0x6a, vector          /* push imm8 */
        .else
            .byte 0x68                  /* push imm32 */
            .long vector
        .endif
    .endif
    jmp trap_common
    .set vector, vector + 1
.endr

trap_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call arch_trap_entry
    mov %rax, %rsp
.global trap_return
trap_return:
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq
