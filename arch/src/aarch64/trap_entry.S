/* aarch64 exception vectors. Each entry reserves a TrapFrame on the current
 * stack (SP_EL1), saves x0/x1, records which of the 16 vectors fired and
 * joins `trap_common`, which saves the rest and calls `arch_trap_entry`; the
 * frame it returns is restored (possibly another thread's). */

.set FRAME_BYTES, 304

.macro VECTOR kind
    .balign 128
    sub sp, sp, #FRAME_BYTES
    stp x0, x1, [sp, #0]
    mov x0, #\kind
    b trap_common
.endm

.section .text, "ax"
.balign 2048
.global trap_vectors
trap_vectors:
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR 4
    VECTOR 5
    VECTOR 6
    VECTOR 7
    VECTOR 8
    VECTOR 9
    VECTOR 10
    VECTOR 11
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

trap_common:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    mrs x1, sp_el0
    stp x30, x1, [sp, #240]
    mrs x1, elr_el1
    mrs x2, spsr_el1
    stp x1, x2, [sp, #256]
    mrs x1, esr_el1
    mrs x2, far_el1
    stp x1, x2, [sp, #272]
    str x0, [sp, #288]
    mov x0, sp
    bl arch_trap_entry
    mov sp, x0
.global trap_return
trap_return:
    ldp x1, x2, [sp, #256]
    msr elr_el1, x1
    msr spsr_el1, x2
    ldp x30, x1, [sp, #240]
    msr sp_el0, x1
    ldp x0, x1, [sp, #0]
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x8, x9, [sp, #64]
    ldp x10, x11, [sp, #80]
    ldp x12, x13, [sp, #96]
    ldp x14, x15, [sp, #112]
    ldp x16, x17, [sp, #128]
    ldp x18, x19, [sp, #144]
    ldp x20, x21, [sp, #160]
    ldp x22, x23, [sp, #176]
    ldp x24, x25, [sp, #192]
    ldp x26, x27, [sp, #208]
    ldp x28, x29, [sp, #224]
    add sp, sp, #FRAME_BYTES
    eret
