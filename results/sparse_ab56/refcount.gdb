set pagination off
set breakpoint pending on
handle SIGTRAP stop nopass
run
break NRT_incref
break NRT_decref
ignore 1 100000000
ignore 2 100000000
cont
info breakpoints
